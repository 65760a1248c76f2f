#!/usr/bin/env bash
# Throwaway certificates for keel's TLS: a CA, one certificate per member (server and client
# use: members verify each other on the peer port) and client certificates, all signed by the
# CA. For tests and `quickstart.sh --tls`; production certificates come from your own CA.
#
#   scripts/gen-certs.sh DIR [--members N] [--clients NAMES] [--hosts LIST] [--days D]
#
#   DIR            written into (created; existing files of the same names are replaced)
#   --members N    member-1 .. member-N (default 3); member i's certificate names
#                  IP 127.0.i.1 (its zone address in scripts/cluster.sh), IP 127.0.0.1 and
#                  DNS localhost, plus every entry of --hosts
#   --clients L    comma-separated client names (default root): client-NAME.pem with
#                  CN=NAME, for client certificate authentication (etcd's CN = user name)
#   --hosts LIST   more subjectAltNames for every member: IP:a.b.c.d or DNS:name, comma-separated
#   --days D       validity (default 365)
#
# Files: ca.pem ca-key.pem, member-<i>.pem member-<i>-key.pem, client-<name>.pem
# client-<name>-key.pem. Keys are EC P-256, mode 0600. Needs the openssl command.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
dir=$1
shift
members=3 clients=root hosts="" days=365
while [ $# -gt 0 ]; do
    case $1 in
    --members) members=${2:?--members needs a number}; shift 2 ;;
    --clients) clients=${2:?--clients needs names}; shift 2 ;;
    --hosts) hosts=${2:?--hosts needs a list}; shift 2 ;;
    --days) days=${2:?--days needs a number}; shift 2 ;;
    *) echo "gen-certs.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[[ $members =~ ^[0-9]+$ && $members -ge 1 && $members -le 254 ]] ||
    { echo "gen-certs.sh: --members '$members' is not a number in [1, 254]" >&2; exit 2; }
[[ $days =~ ^[0-9]+$ && $days -ge 1 ]] ||
    { echo "gen-certs.sh: --days '$days' is not a positive number" >&2; exit 2; }
if [ -n "$hosts" ] && ! [[ $hosts =~ ^((IP|DNS):[A-Za-z0-9.:-]+,?)+$ ]]; then
    echo "gen-certs.sh: --hosts '$hosts' is not a list of IP:addr or DNS:name" >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "gen-certs.sh: the openssl command is missing" >&2; exit 1; }

mkdir -p "$dir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA.
key "$dir/ca-key.pem"
openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days "$days" -subj "/CN=keel test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null

# sign NAME CN EXTFILE: NAME.pem from NAME-key.pem, signed by the CA.
sign() {
    local name=$1 cn=$2 ext=$3
    key "$dir/$name-key.pem"
    openssl req -new -key "$dir/$name-key.pem" -subj "/CN=$cn" -out "$tmp/$name.csr" 2>/dev/null
    openssl x509 -req -in "$tmp/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
        -CAcreateserial -CAserial "$tmp/ca.srl" -sha256 -days "$days" -extfile "$ext" \
        -out "$dir/$name.pem" 2>/dev/null
}

for i in $(seq 1 "$members"); do
    san="IP:127.0.$i.1,IP:127.0.0.1,DNS:localhost${hosts:+,$hosts}"
    cat >"$tmp/member.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EOF
    sign "member-$i" "member-$i" "$tmp/member.ext"
done

IFS=, read -r -a names <<<"$clients"
for n in "${names[@]}"; do
    [[ $n =~ ^[A-Za-z0-9._-]+$ ]] || { echo "gen-certs.sh: client name '$n' is not [A-Za-z0-9._-]+" >&2; exit 2; }
    cat >"$tmp/client.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOF
    sign "client-$n" "$n" "$tmp/client.ext"
done
chmod 644 "$dir"/*.pem
chmod 600 "$dir"/*-key.pem
echo "gen-certs.sh: CA, $members member(s) and client(s) ${clients} in $dir"
