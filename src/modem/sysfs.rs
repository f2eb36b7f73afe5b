//! What Linux says about a modem port: the network interface of the same USB device in
//! sysfs (the bearer's wwan0 / usb0 / wwp0s20u1i4), for usage counters without
//! configuration (`[modems] netdevs` stays an override); and whether ModemManager, which
//! probes and keeps open the same ports without taking their lock, was told by udev to
//! leave the port alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether ModemManager may drive `port` too: it runs (or is enabled to start at boot)
/// and udev's database does not tag the port ID_MM_DEVICE_IGNORE or ID_MM_PORT_IGNORE.
/// Some(advice) when so.
pub fn modemmanager_conflict(port: &str) -> Option<String> {
    if port.starts_with("tcp://") || !modemmanager_present() {
        return None;
    }
    let rdev = std::fs::metadata(port).ok()?.rdev();
    // Linux dev_t encoding (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    let db =
        std::fs::read_to_string(format!("/run/udev/data/c{major}:{minor}")).unwrap_or_default();
    (!mm_ignores(&db)).then(|| {
        "ModemManager is on this machine and udev does not tell it to leave this port alone \
         (ID_MM_DEVICE_IGNORE or ID_MM_PORT_IGNORE): both would send AT commands to it and \
         read each other's answers. Install one of the rules in /usr/share/simgate/udev/ \
         (README.md there explains the two ways), or stop ModemManager"
            .to_string()
    })
}

/// A udev database entry (/run/udev/data/cMAJ:MIN, lines `E:KEY=VALUE`) tags the device
/// for ModemManager to ignore, as a whole device or as one port.
pub fn mm_ignores(udev_db: &str) -> bool {
    udev_db
        .lines()
        .any(|l| l == "E:ID_MM_DEVICE_IGNORE=1" || l == "E:ID_MM_PORT_IGNORE=1")
}

/// A ModemManager process is visible, or its unit is enabled (the daemon's hardened unit
/// hides other users' processes, so the enablement link is what it can see).
fn modemmanager_present() -> bool {
    let running = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "ModemManager")
        });
    running
        || Path::new("/etc/systemd/system/multi-user.target.wants/ModemManager.service").exists()
        || Path::new("/etc/systemd/system/dbus-org.freedesktop.ModemManager1.service").exists()
}

/// The network interface on the USB device behind the tty `port` (a /dev path, symlinks
/// such as /dev/serial/by-id followed), looked up under `sys` (/sys). None for a pty, a
/// TCP bridge, a device with no network interface, or one with several (ambiguous: the
/// override must say).
pub fn netdev_for(sys: &Path, port: &str) -> Option<String> {
    if port.starts_with("tcp://") {
        return None;
    }
    let tty = std::fs::canonicalize(port).ok()?;
    let name = tty.file_name()?.to_str()?;
    // /sys/class/tty/ttyUSB2/device: the usb-serial port (under its USB interface) or,
    // for cdc-acm, the USB interface itself.
    let mut dir: PathBuf =
        std::fs::canonicalize(sys.join("class/tty").join(name).join("device")).ok()?;
    // Up to the USB device: the first ancestor with an idVendor attribute.
    while !dir.join("idVendor").exists() {
        dir = dir.parent()?.to_path_buf();
        if !dir.starts_with(sys) {
            return None;
        }
    }
    let mut found = Vec::new();
    for interface in std::fs::read_dir(&dir).ok()?.filter_map(Result::ok) {
        if let Ok(nets) = std::fs::read_dir(interface.path().join("net")) {
            found.extend(
                nets.filter_map(Result::ok)
                    .map(|n| n.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    match found.len() {
        1 => found.pop(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs tree modelled on a Quectel EC25's (usb 1-1: ttyUSB2 on interface 1.2, the
    /// QMI interface 1.4 with wwan0; not recorded from one), made in a scratch directory.
    fn ec25(root: &Path, nets: &[&str]) -> (PathBuf, PathBuf) {
        let sys = root.join("sys");
        let usb = sys.join("devices/pci0000:00/0000:00:14.0/usb1/1-1");
        std::fs::create_dir_all(usb.join("1-1:1.2/ttyUSB2/tty/ttyUSB2")).unwrap();
        std::fs::write(usb.join("idVendor"), "2c7c\n").unwrap();
        for n in nets {
            std::fs::create_dir_all(usb.join("1-1:1.4/net").join(n)).unwrap();
        }
        std::fs::create_dir_all(sys.join("class/tty")).unwrap();
        std::os::unix::fs::symlink(
            usb.join("1-1:1.2/ttyUSB2/tty/ttyUSB2"),
            sys.join("class/tty/ttyUSB2"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            usb.join("1-1:1.2/ttyUSB2"),
            usb.join("1-1:1.2/ttyUSB2/tty/ttyUSB2/device"),
        )
        .unwrap();
        let dev = root.join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("ttyUSB2"), "").unwrap();
        (std::fs::canonicalize(&sys).unwrap(), dev.join("ttyUSB2"))
    }

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("simgate-sysfs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn the_usb_devices_one_interface_is_the_bearer() {
        let root = scratch("one");
        let (sys, port) = ec25(&root, &["wwan0"]);
        assert_eq!(
            netdev_for(&sys, port.to_str().unwrap()),
            Some("wwan0".into())
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn several_interfaces_or_none_say_nothing() {
        let root = scratch("two");
        let (sys, port) = ec25(&root, &["wwan0", "usb0"]);
        assert_eq!(netdev_for(&sys, port.to_str().unwrap()), None);
        std::fs::remove_dir_all(&root).unwrap();
        let root = scratch("none");
        let (sys, port) = ec25(&root, &[]);
        assert_eq!(netdev_for(&sys, port.to_str().unwrap()), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Entries in udev's database format (`S:` symlinks, `E:` properties), written for
    /// this test after what 61-simgate-spare-port.rules sets: not recorded from a modem.
    #[test]
    fn udev_tags_for_modemmanager_are_read() {
        let tagged = "S:serial/by-id/usb-Quectel_EC25-if03-port0\nS:simgate/modem0-at\nE:ID_VENDOR_ID=2c7c\nE:ID_MM_PORT_IGNORE=1\nE:ID_USB_INTERFACE_NUM=03\n";
        assert!(mm_ignores(tagged));
        assert!(mm_ignores("E:ID_MM_DEVICE_IGNORE=1\n"));
        assert!(!mm_ignores("E:ID_VENDOR_ID=2c7c\nE:ID_MM_CANDIDATE=1\n"));
        assert!(!mm_ignores(""));
    }

    #[test]
    fn a_pty_or_a_bridge_has_no_usb_device() {
        assert_eq!(netdev_for(Path::new("/sys"), "tcp://127.0.0.1:2000"), None);
        assert_eq!(netdev_for(Path::new("/sys"), "/dev/ptmx"), None);
    }
}
