#!/bin/sh
# The gateway: nginx in front of vLLM. Checks the settings below, renders nginx.conf.template (beside
# this script) into a private folder on tmpfs (the API keys go there and nowhere else: not the
# environment, not the command line, so `docker inspect` and `ps` never show them), checks it with
# `nginx -t`, then execs nginx in the foreground as PID 1 (SIGQUIT: graceful stop, in-flight
# streams finish).
#   sh gateway/run.sh              render, check, exec nginx
#   sh gateway/run.sh --render     render and check only; print the config's path
#   sh gateway/run.sh --health     the healthcheck: GET /health through this gateway (curl or wget)
# POSIX sh: runs in the nginx image (busybox) and in Debian's (dash).
#
# Settings (environment; compose.yaml sets them, defaults here):
#   GATEWAY_KEYS_FILE=/run/secrets/api_key  one API key per line (# comments); the first one is
#                                   also vLLM's own key, which the gateway sends upstream
#   GATEWAY_UPSTREAM=vllm:8000      host:port of vLLM (a name is re-resolved every 5 s, so a
#                                   restarted vllm container is found again)
#   GATEWAY_LISTEN=8080             [address:]port to listen on
#   GATEWAY_ROUTES                  the allowlist: exact paths forwarded (everything else is 404)
#   GATEWAY_MAX_BODY=4m             largest request body (413 above)
#   GATEWAY_RATE=20                 requests per second per key (429 above the burst)
#   GATEWAY_BURST=40                requests a key may send at once above the rate
#   GATEWAY_MAX_CONCURRENT=32       requests per key in flight at once (429 above)
#   GATEWAY_TLS_DIR=/etc/qvs-gateway/tls   if tls.crt and tls.key are there, serve HTTPS only
#   GATEWAY_CONF_DIR=/tmp/qvs-gateway      where the rendered config lives (private, 0700)
#   GATEWAY_WORKERS=auto            nginx worker processes
#   GATEWAY_STREAM_TIMEOUT=900      seconds an answer may take between two bytes
#   GATEWAY_NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so   nginx's njs module (qvs.js)
set -eu

die() {
  echo "gateway: $*" >&2
  exit 2
}

keys_file=${GATEWAY_KEYS_FILE:-/run/secrets/api_key}
upstream=${GATEWAY_UPSTREAM:-vllm:8000}
listen=${GATEWAY_LISTEN:-8080}
routes=${GATEWAY_ROUTES:-/v1/models /v1/completions /v1/chat/completions}
max_body=${GATEWAY_MAX_BODY:-4m}
rate=${GATEWAY_RATE:-20}
burst=${GATEWAY_BURST:-40}
concurrent=${GATEWAY_MAX_CONCURRENT:-32}
tls_dir=${GATEWAY_TLS_DIR:-/etc/qvs-gateway/tls}
dir=${GATEWAY_CONF_DIR:-/tmp/qvs-gateway}
workers=${GATEWAY_WORKERS:-auto}
stream_timeout=${GATEWAY_STREAM_TIMEOUT:-900}

if [ "${1:-}" = "--health" ]; then
  port=${listen##*:}
  if [ -f "$tls_dir/tls.crt" ]; then url=https://127.0.0.1:$port/health; else url=http://127.0.0.1:$port/health; fi
  if command -v curl >/dev/null 2>&1; then exec curl -fsSk -o /dev/null --max-time 4 "$url"; fi
  exec wget -q -O /dev/null -T 4 --no-check-certificate "$url"
fi

# --- check the settings: each problem names the setting and the fix --------------------------
number() { # NAME VALUE MIN MAX
  case $2 in '' | *[!0-9]*) die "$1=$2 must be a whole number between $3 and $4; fix it in .env" ;; esac
  if [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then die "$1=$2 must be between $3 and $4; fix it in .env"; fi
}
number GATEWAY_RATE "$rate" 1 100000
number GATEWAY_BURST "$burst" 1 100000  # nginx refuses burst=0
number GATEWAY_MAX_CONCURRENT "$concurrent" 1 100000
number GATEWAY_STREAM_TIMEOUT "$stream_timeout" 1 86400
# digits and one optional k or m, as scripts/stack/settings.py's _size (no g: bodies are held in memory)
case ${max_body%[kKmM]} in *[!0-9]* | '') die "GATEWAY_MAX_BODY=$max_body must be a size like 4m or 512k; fix it in .env" ;; esac
case $workers in auto) ;; *) number GATEWAY_WORKERS "$workers" 1 256 ;; esac
case $upstream in
  *[!A-Za-z0-9.:_-]* | '' | *:) die "GATEWAY_UPSTREAM=$upstream must be host:port, e.g. vllm:8000" ;;
  *:*) ;;
  *) die "GATEWAY_UPSTREAM=$upstream must be host:port, e.g. vllm:8000" ;;
esac
case $listen in *[!0-9A-Za-z.:\[\]]* | '') die "GATEWAY_LISTEN=$listen must be [address:]port, e.g. 8080" ;; esac
for r in $routes; do
  case $r in
    /*[!A-Za-z0-9/_.-]* | *..* | *//*) die "GATEWAY_ROUTES: '$r' is not a plain path like /v1/models" ;;
    /*) ;;
    *) die "GATEWAY_ROUTES: '$r' must start with /" ;;
  esac
done

[ -r "$keys_file" ] || die "cannot read the API key file $keys_file; create it with \`python3 -m scripts.init_secrets\` (API_KEY_FILE in .env names it)"

# --- render ------------------------------------------------------------------------------------
# nginx.conf.template beside this script, with each {{NAME}} replaced by $QVS_NAME (awk: in busybox
# and in Debian's minbase, where envsubst is not). The keys go into keys.map and upstream-key.conf,
# never into an environment variable.
here=$(cd "$(dirname "$0")" && pwd)
template=$here/nginx.conf.template
[ -r "$template" ] || die "cannot read $template (it belongs beside run.sh)"
[ -r "$here/qvs.js" ] || die "cannot read $here/qvs.js (it belongs beside run.sh)"
# nginx's njs module: Debian's libnginx-mod-http-js and the nginx.org packages (the Alpine image)
# both put it here
njs=${GATEWAY_NJS_MODULE:-/usr/lib/nginx/modules/ngx_http_js_module.so}
[ -r "$njs" ] || die "nginx's njs module is not at $njs: install it (Debian: apt-get install libnginx-mod-http-js; the nginxinc/nginx-unprivileged *-alpine images ship it, the *-alpine-slim ones do not) or set GATEWAY_NJS_MODULE to its path"
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
conf=$dir/nginx.conf
tmp=$dir/nginx.conf.part

# the key map: "Bearer KEY" -> k1, k2, ... (the label is what logs and limits see, never the key)
n=0
first=""
: >"$dir/keys.map"
while IFS= read -r line || [ -n "$line" ]; do
  key=$(printf '%s' "$line" | tr -d '\r' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
  case $key in '' | '#'*) continue ;; esac
  n=$((n + 1))
  case $key in
    *[!A-Za-z0-9._~+/=-]*) die "the key on line $n of $keys_file has characters other than A-Z a-z 0-9 . _ ~ + / = -; make a new one (delete the file, run \`python3 -m scripts.init_secrets\`)" ;;
  esac
  [ ${#key} -ge 16 ] || die "the key on line $n of $keys_file is ${#key} characters; use 16 or more (\`python3 -m scripts.init_secrets\` makes 43)"
  [ -n "$first" ] || first=$key
  # exact: a regular expression (map strings ignore case); the scheme's case does not matter
  printf '"~^(?i:bearer) %s$" k%s;\n' "$(printf '%s' "$key" | sed 's/[.+]/\\&/g')" "$n" >>"$dir/keys.map"
done <"$keys_file"
[ "$n" -gt 0 ] || die "$keys_file holds no key; put one in it (\`python3 -m scripts.init_secrets\`)"
printf 'proxy_set_header Authorization "Bearer %s";\n' "$first" >"$dir/upstream-key.conf"

# the allowlist: each exact path (case-sensitive) maps to itself
: >"$dir/routes.map"
for r in $routes; do
  printf '"~^%s$" %s;\n' "$(printf '%s' "$r" | sed 's/[.]/\\./g')" "$r" >>"$dir/routes.map"
done

# nginx resolves a host name in proxy_pass only through `resolver`; Docker's is in resolv.conf
resolver=""
ns=$(awk '$1 == "nameserver" {print $2; exit}' /etc/resolv.conf 2>/dev/null || true)
case $ns in
  *:*) resolver="resolver [$ns] valid=5s ipv6=off;" ;;
  ?*) resolver="resolver $ns valid=5s ipv6=off;" ;;
esac

ssl=""
tls_conf=""
scheme=http
if [ -f "$tls_dir/tls.crt" ] || [ -f "$tls_dir/tls.key" ]; then
  if [ ! -r "$tls_dir/tls.crt" ] || [ ! -r "$tls_dir/tls.key" ]; then
    die "TLS: $tls_dir needs both tls.crt and tls.key, readable by uid $(id -u); or remove both for plain HTTP"
  fi
  ssl=" ssl"
  scheme=https
  tls_conf="ssl_certificate $tls_dir/tls.crt;
        ssl_certificate_key $tls_dir/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:qvs_tls:10m;"
fi

{
  echo "# rendered by gateway/run.sh from $template at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  QVS_NJS_MODULE=$njs QVS_HERE=$here QVS_WORKERS=$workers QVS_DIR=$dir QVS_MAX_BODY=$max_body \
    QVS_RATE=$rate QVS_BURST=$burst QVS_CONCURRENT=$concurrent QVS_RESOLVER=$resolver QVS_LISTEN="$listen$ssl" QVS_TLS=$tls_conf \
    QVS_UPSTREAM=$upstream QVS_STREAM_TIMEOUT=$stream_timeout QVS_ROUTES=$routes \
    awk '{
      out = ""
      while (match($0, /[{][{][A-Z_]+[}][}]/)) {
        name = "QVS_" substr($0, RSTART + 2, RLENGTH - 4)
        if (!(name in ENVIRON)) {
          printf "gateway: %s line %d: no value for %s\n", FILENAME, FNR, substr($0, RSTART, RLENGTH) > "/dev/stderr"
          exit 2
        }
        out = out substr($0, 1, RSTART - 1) ENVIRON[name]
        $0 = substr($0, RSTART + RLENGTH)
      }
      print out $0
    }' "$template"
} >"$tmp" || die "could not render $template into $tmp"
mv "$tmp" "$conf"

nginx -t -q -e stderr -c "$conf" || die "nginx rejected the rendered config $conf (see above)"
echo "gateway: listening on $scheme port $listen for $n key(s); upstream $upstream; routes: $routes /health; body <= $max_body; per key <= $concurrent at once, $rate/s (burst $burst)" >&2
if [ "${1:-}" = "--render" ]; then
  echo "$conf"
  exit 0
fi
exec nginx -e stderr -c "$conf" -g 'daemon off;'
