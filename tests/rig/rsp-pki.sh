#!/usr/bin/env bash
# A private RSP test PKI (GSMA SGP.22 §4.5.2), made with openssl at test time:
#
#   CI ── EUM ── eUICC          ci.pem ci.key  eum.pem eum.key  euicc.pem euicc.key
#    ├── DPauth                  dpauth.pem dpauth.key
#    ├── DPpb                    dppb.pem dppb.key
#    └── DPtls                   dptls.pem dptls.key  (TLS server: localhost, 127.0.0.1)
#
# usage: rsp-pki.sh DIR EID [CI_NAME]
#        rsp-pki.sh --euicc FROM DIR EID
#   DIR      created if missing; existing files of these names are overwritten
#   --euicc  another eUICC of FROM's PKI (a batch of eUICCs from one EUM): DIR gets
#            FROM's ci.pem and eum.pem and a new euicc.pem/euicc.key for EID, issued by
#            FROM's EUM
#   EID      32 digits: the eUICC certificate's subject serialNumber (SGP.22 §4.5.2.1.0.2)
#   CI_NAME  a name for the CI (default "test"): a second PKI with another name is the
#            "certificate from another CI" of the tests
#
# All keys are NIST P-256, PEM PKCS#8; all certificates PEM, signed ecdsa-with-SHA256.
# The profiles follow SGP.22 §4.5.2.1 as far as openssl's config allows: the role OIDs of
# SGP.22's ASN.1 module (id-rspRole 2.23.146.1.2.1.x) as certificate policies, key usage,
# SubjectKeyIdentifier on every certificate (the CI's is its PKID, what EUICCInfo1 lists),
# AuthorityKeyIdentifier on every issued one. The EUM's nameConstraints (an EID prefix)
# and the CRL distribution points are left out: nothing in the rig checks revocation.
# The TLS certificate's policy is not critical (webpki refuses unknown critical
# extensions in a server certificate), as in GSMA's SGP.26 test certificates.
set -euo pipefail

from=
if [ "${1:-}" = --euicc ]; then
  if [ $# -ne 4 ]; then
    echo "usage: $0 --euicc FROM DIR EID" >&2
    exit 2
  fi
  from=$2
  shift 2
  for f in ci.pem eum.pem eum.key; do
    [ -f "$from/$f" ] || { echo "$0: $from/$f: missing (make FROM with $0 DIR EID first)" >&2; exit 2; }
  done
elif [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 DIR EID [CI_NAME]" >&2
  exit 2
fi
dir=$1
eid=$2
ci_name=${3:-test}
if ! [[ $eid =~ ^[0-9]{32}$ ]]; then
  echo "$0: EID must be 32 digits, got '$eid'" >&2
  exit 2
fi
if ! [[ $ci_name =~ ^[A-Za-z0-9_-]+$ ]]; then
  echo "$0: CI_NAME must be letters, digits, - or _, got '$ci_name'" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "$0: openssl not found (tests/rig/deps.sh installs it)" >&2; exit 1; }

mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# SGP.22 ASN.1 module (RSPDefinitions): id-rspRole = 2.23.146.1.2.1.
role_ci=2.23.146.1.2.1.0
role_euicc=2.23.146.1.2.1.1
role_eum=2.23.146.1.2.1.2
role_dp_tls=2.23.146.1.2.1.3
role_dp_auth=2.23.146.1.2.1.4
role_dp_pb=2.23.146.1.2.1.5
# The SM-DP+'s registered ID in subjectAltName (SGP.22 §4.5.2.1.0.3 asks for the
# SM-DP+'s OID there); 2.999 is ITU-T X.660's arc for examples.
dp_oid=2.999.10

cat > "$tmp/ext.cnf" <<EOF
[ci]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
certificatePolicies = critical, $role_ci
subjectKeyIdentifier = hash
subjectAltName = RID:2.999.1

[eum]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
certificatePolicies = critical, $role_eum
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = RID:2.999.5

[euicc]
keyUsage = critical, digitalSignature
certificatePolicies = critical, $role_euicc
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[dpauth]
keyUsage = critical, digitalSignature
certificatePolicies = critical, $role_dp_auth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = RID:$dp_oid

[dppb]
keyUsage = critical, digitalSignature
certificatePolicies = critical, $role_dp_pb
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = RID:$dp_oid

[dptls]
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, serverAuth, clientAuth
certificatePolicies = $role_dp_tls
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF

key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.key" 2>/dev/null
  chmod 600 "$dir/$1.key"
}

# issue NAME SUBJECT ISSUER DAYS: a certificate for NAME's key, signed by ISSUER's.
issue() {
  local name=$1 subject=$2 issuer=$3 days=$4
  openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$tmp/$name.csr"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$dir/$issuer.pem" -CAkey "$dir/$issuer.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days "$days" -sha256 \
    -extfile "$tmp/ext.cnf" -extensions "$name" -out "$dir/$name.pem" 2>/dev/null
}

if [ -n "$from" ]; then
  # One more eUICC under FROM's EUM: its own key, its EID in its certificate.
  cp "$from/ci.pem" "$from/eum.pem" "$dir/"
  key euicc
  openssl req -new -key "$dir/euicc.key" -subj "/O=simgate test EUM/CN=simgate test eUICC/serialNumber=$eid" -out "$tmp/euicc.csr"
  openssl x509 -req -in "$tmp/euicc.csr" -CA "$from/eum.pem" -CAkey "$from/eum.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 3650 -sha256 \
    -extfile "$tmp/ext.cnf" -extensions euicc -out "$dir/euicc.pem" 2>/dev/null
  openssl verify -CAfile "$dir/ci.pem" -untrusted "$dir/eum.pem" "$dir/euicc.pem" >/dev/null
  echo "eUICC $eid of $from's PKI in $dir"
  exit 0
fi

for k in ci eum euicc dpauth dppb dptls; do key "$k"; done

# Self-signed; `req -x509` reads its extensions from a config section.
openssl req -new -x509 -key "$dir/ci.key" -sha256 -days 3650 \
  -set_serial "0x$(openssl rand -hex 8)" \
  -subj "/O=simgate RSP $ci_name/OU=TESTCERT/CN=simgate $ci_name CI" \
  -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n'; cat "$tmp/ext.cnf") \
  -extensions ci -out "$dir/ci.pem"

issue eum "/O=simgate test EUM/CN=simgate $ci_name EUM" ci 3650
issue euicc "/O=simgate test EUM/CN=simgate test eUICC/serialNumber=$eid" eum 3650
issue dpauth "/O=simgate test SM-DP\\+/CN=simgate $ci_name SM-DP\\+ auth" ci 3650
issue dppb "/O=simgate test SM-DP\\+/CN=simgate $ci_name SM-DP\\+ pb" ci 3650
issue dptls "/O=simgate test SM-DP\\+/CN=localhost" ci 3650

openssl verify -CAfile "$dir/ci.pem" -untrusted "$dir/eum.pem" "$dir/euicc.pem" >/dev/null
for c in dpauth dppb dptls; do
  openssl verify -CAfile "$dir/ci.pem" "$dir/$c.pem" >/dev/null
done
echo "RSP test PKI ($ci_name CI, EID $eid) in $dir"
