//! The broker's security for the tests that need it: a test PKI for TLS listeners and
//! client certificates, and password files.

use super::{which, TempDir, INSTALL_HINT};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Test PKI made with the `openssl` CLI: a CA, a server certificate for 127.0.0.1 and
/// client certificates, all PEM, readable by the `mosquitto` user.
#[derive(Debug)]
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new(clients: &[&str]) -> Pki {
        assert!(
            which("openssl"),
            "openssl not found: apt-get install openssl"
        );
        let dir = TempDir::new("pki");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // P-256 keys: quick to make, supported by rustls (ring) and mosquitto.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=simgate test CA",
            ],
        ]
        .concat());
        let sign = |name: &str, cn: &str, ext: &str| {
            std::fs::write(d.join(format!("{name}.ext")), ext).expect("write ext");
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        };
        sign(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        for c in clients {
            sign(c, c, "extendedKeyUsage=clientAuth\n");
        }
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(d).expect("read pki dir").flatten() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644));
        }
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// mosquitto_sub/mosquitto_pub options for client `name`. `--insecure` skips only
    /// the host-name check of these test clients; simgate checks it for real.
    pub fn client_args(&self, name: &str) -> Vec<String> {
        vec![
            "--cafile".into(),
            self.path("ca.pem"),
            "--cert".into(),
            self.path(&format!("{name}.pem")),
            "--key".into(),
            self.path(&format!("{name}.key")),
            "--insecure".into(),
        ]
    }
}

/// A mosquitto password file (`mosquitto_passwd -b`) with `users` (name, password).
pub fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("passwd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd
            .arg("-b")
            .arg(&file)
            .args([u, p])
            .status()
            .unwrap_or_else(|e| panic!("cannot run mosquitto_passwd: {e}; {INSTALL_HINT}"));
        assert!(st.success(), "mosquitto_passwd failed");
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644));
    file
}
