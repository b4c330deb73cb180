#!/bin/sh
# The gateway: nginx in front of vLLM. Renders nginx.conf from the settings below into a private
# folder on tmpfs (the API keys go there and nowhere else: not the environment, not the command
# line, so `docker inspect` and `ps` never show them), checks it with `nginx -t`, then execs nginx
# in the foreground as PID 1 (SIGQUIT: graceful stop, in-flight streams finish).
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
number GATEWAY_BURST "$burst" 0 100000
number GATEWAY_MAX_CONCURRENT "$concurrent" 1 100000
number GATEWAY_STREAM_TIMEOUT "$stream_timeout" 1 86400
case $max_body in *[!0-9kKmM]* | '' | [!0-9]*) die "GATEWAY_MAX_BODY=$max_body must be a size like 4m or 512k; fix it in .env" ;; esac
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

# --- render -------------------------------------------------------------------------------------
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
conf=$dir/nginx.conf
tmp=$dir/nginx.conf.part

# the key map: "Bearer KEY" -> k1, k2, ... (the label is what logs and limits see, never the key)
n=0
first=""
map=""
while IFS= read -r line || [ -n "$line" ]; do
  key=$(printf '%s' "$line" | tr -d '\r' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
  case $key in '' | '#'*) continue ;; esac
  n=$((n + 1))
  case $key in
    *[!A-Za-z0-9._~+/=-]*) die "the key on line $n of $keys_file has characters other than A-Z a-z 0-9 . _ ~ + / = -; make a new one (delete the file, run \`python3 -m scripts.init_secrets\`)" ;;
  esac
  [ ${#key} -ge 16 ] || die "the key on line $n of $keys_file is ${#key} characters; use 16 or more (\`python3 -m scripts.init_secrets\` makes 43)"
  [ -n "$first" ] || first=$key
  map="$map        \"Bearer $key\" k$n;
"
done <"$keys_file"
[ "$n" -gt 0 ] || die "$keys_file holds no key; put one in it (\`python3 -m scripts.init_secrets\`)"

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

# one exact location per allowlisted route: authenticated, limited, forwarded to the same path
locations=""
for r in $routes; do
  locations="$locations
        location = $r {
            if (\$qvs_key = \"\") { return 401; }
            limit_req zone=qvs_rate burst=$burst nodelay;
            limit_conn qvs_conn $concurrent;
            proxy_pass http://\$qvs_upstream$r\$is_args\$args;
        }
"
done

json_error() { # STATUS TYPE MESSAGE: an OpenAI-style error body
  printf "return %s '{\"error\": {\"message\": \"%s\", \"type\": \"%s\", \"code\": %s}}\\\\n';" "$1" "$3" "$2" "$1"
}

cat >"$tmp" <<EOF
# rendered by gateway/run.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); private: it holds the API keys
worker_processes $workers;
pid $dir/nginx.pid;
error_log stderr warn;
worker_shutdown_timeout 120s;

events {
    worker_connections 4096;
}

http {
    server_tokens off;
    default_type application/json;
    charset utf-8;
    charset_types application/json;
    log_format qvs '\$remote_addr [\$time_local] "\$request_method \$uri" \$status '
                   '\$body_bytes_sent \${request_time}s key=\$qvs_key upstream=\$upstream_status';
    access_log /dev/stdout qvs;

    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;

    # bodies and headers: bounded in size and time (slow-loris clients are cut off)
    client_max_body_size $max_body;
    client_body_buffer_size 1m;
    client_header_buffer_size 4k;
    large_client_header_buffers 4 16k;
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 60s;
    keepalive_timeout 30s;
    keepalive_requests 1000;
    reset_timedout_connection on;

    map_hash_bucket_size 256;  # keys are long
    map \$http_authorization \$qvs_key {
        default "";
$map    }

    limit_req_zone \$qvs_key zone=qvs_rate:10m rate=${rate}r/s;
    limit_conn_zone \$qvs_key zone=qvs_conn:10m;
    limit_req_zone \$binary_remote_addr zone=qvs_health:1m rate=10r/s;
    limit_req_status 429;
    limit_conn_status 429;
    limit_req_log_level warn;
    limit_conn_log_level warn;

    $resolver

    server {
        listen $listen$ssl;
        $tls_conf

        set \$qvs_upstream $upstream;
        set \$qvs_upstream_key "$first";

        # streaming answers pass through as they are made; the request body is read whole first,
        # so vLLM never waits on a slow client
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$remote_addr;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header Authorization "Bearer \$qvs_upstream_key";  # clients' keys stay here
        proxy_buffering off;
        proxy_cache off;
        proxy_request_buffering on;
        proxy_connect_timeout 5s;
        proxy_read_timeout ${stream_timeout}s;
        proxy_send_timeout 60s;
        proxy_hide_header X-Powered-By;

        error_page 400 @e400;
        error_page 401 @e401;
        error_page 404 @e404;
        error_page 405 @e405;
        error_page 408 @e408;
        error_page 413 @e413;
        error_page 414 494 =400 @e414;
        error_page 429 @e429;
        error_page 500 502 503 504 =503 @e503;  # one clean answer while vLLM is away

        # liveness for load balancers and healthchecks: no key needed, nothing else exposed
        location = /health {
            limit_req zone=qvs_health burst=20 nodelay;
            proxy_pass http://\$qvs_upstream/health;
        }
$locations
        location / {
            return 404;
        }

        location @e400 { $(json_error 400 invalid_request_error "bad request: the request line, headers or body could not be read") }
        location @e401 {
            add_header WWW-Authenticate 'Bearer realm="qwen3-vllm-stack"' always;
            $(json_error 401 authentication_error "missing or wrong API key: send the header Authorization: Bearer <key>")
        }
        location @e404 { $(json_error 404 not_found_error "no such route here; this gateway serves $routes and /health") }
        location @e405 { $(json_error 405 invalid_request_error "method not allowed on this route") }
        location @e408 { $(json_error 408 timeout_error "the request was not received in time (10 s for headers and between body reads)") }
        location @e413 { $(json_error 413 invalid_request_error "request body larger than $max_body (GATEWAY_MAX_BODY)") }
        location @e414 { $(json_error 400 invalid_request_error "request line or headers too large") }
        location @e429 {
            add_header Retry-After 1 always;
            $(json_error 429 rate_limit_error "too many requests for this API key: at most $concurrent at once and $rate per second (burst $burst); retry after 1 s")
        }
        location @e503 {
            add_header Retry-After 5 always;
            $(json_error 503 server_unavailable_error "the model server is not answering (starting or restarting); retry after 5 s")
        }
    }
}
EOF
mv "$tmp" "$conf"

nginx -t -q -e stderr -c "$conf" || die "nginx rejected the rendered config $conf (see above)"
echo "gateway: listening on $scheme port $listen for $n key(s); upstream $upstream; routes: $routes /health; body <= $max_body; per key <= $concurrent at once, $rate/s (burst $burst)" >&2
if [ "${1:-}" = "--render" ]; then
  echo "$conf"
  exit 0
fi
exec nginx -e stderr -c "$conf" -g 'daemon off;'
