#!/usr/bin/env bash
# The tutorial's curl checks against a running endpoint. Settings (all optional):
#   SMOKE_BASE_URL   http://localhost:8000      SMOKE_MODEL   Qwen3-8B
#   SMOKE_API_KEY or SMOKE_API_KEY_FILE         the key, if the server has one
#   SMOKE_CHECK_ANSWERS=0                       skip answer text checks (dummy weights)
#   SMOKE_MAX_TOKENS                            cap every answer (default 4096 thinking, 1024 not)
set -Eeuo pipefail
trap 'echo "smoke.sh: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

base=${SMOKE_BASE_URL:-http://localhost:8000}
model=${SMOKE_MODEL:-Qwen3-8B}
key=${SMOKE_API_KEY:-}
if [[ -z $key && -n ${SMOKE_API_KEY_FILE:-} ]]; then  # one key per line: the first one
  key=$(grep -m1 -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$SMOKE_API_KEY_FILE" | tr -d '[:space:]' || true)
fi
answers=${SMOKE_CHECK_ANSWERS:-1}
long=${SMOKE_MAX_TOKENS:-4096}
short=${SMOKE_MAX_TOKENS:-1024}
auth=()
[[ -n $key ]] && auth=(-H "Authorization: Bearer $key")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0

# request METHOD PATH [JSON]: writes the body to $tmp/body, prints the HTTP status
request() {
  local data=()
  [[ $# -ge 3 ]] && data=(-H "Content-Type: application/json" --data-binary "$3")
  curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 600 -X "$1" "${auth[@]}" "${data[@]}" "$base$2"
}

# check NAME PYTHON-EXPR: evaluates the expression with `r` bound to the JSON body
check() {
  if python3 - "$tmp/body" "$2" <<'PY'
import json, sys
body = open(sys.argv[1], encoding="utf-8").read()
r = json.loads(body) if body.lstrip().startswith(("{", "[")) else body
def msg(r): return r["choices"][0]["message"]
def reasoning(m): return m.get("reasoning") or m.get("reasoning_content")
ok = eval(sys.argv[2])
if not ok:
    print(body[:2000], file=sys.stderr)
sys.exit(0 if ok else 1)
PY
  then echo "ok   $1"; passed=$((passed + 1))
  else echo "FAIL $1: expected $2" >&2; exit 1
  fi
}

# check_answer NAME PYTHON-EXPR: an answer-text check, skipped for dummy weights
check_answer() {
  if [[ $answers == 1 ]]; then check "$1" "$2"; else echo "skip $1 (SMOKE_CHECK_ANSWERS=0)"; fi
}

status=$(request GET /health)
[[ $status == 200 ]] || { echo "FAIL /health answered $status" >&2; exit 1; }
echo "ok   GET /health"

status=$(request GET /v1/models)
[[ $status == 200 ]] || { echo "FAIL GET /v1/models answered $status" >&2; cat "$tmp/body" >&2; exit 1; }
check "GET /v1/models lists $model" "[m['id'] for m in r['data']] == ['$model'] and r['data'][0]['max_model_len'] > 0"

prompt='我想问你，5的阶乘是多少？<think>\n'
status=$(request POST /v1/completions "{\"model\": \"$model\", \"prompt\": \"$prompt\", \"max_tokens\": $short, \"temperature\": 0}")
[[ $status == 200 ]] || { echo "FAIL completions answered $status" >&2; cat "$tmp/body" >&2; exit 1; }
check "completions: tutorial prompt is 12 tokens" "r['usage']['prompt_tokens'] == 12 and r['usage']['completion_tokens'] > 0"
check_answer "completions: the answer says 120" "'120' in r['choices'][0]['text']"

status=$(request POST /v1/chat/completions "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"$prompt\"}], \"max_tokens\": $long}")
[[ $status == 200 ]] || { echo "FAIL chat answered $status" >&2; cat "$tmp/body" >&2; exit 1; }
check "chat (thinking): prompt is 20 tokens" "r['usage']['prompt_tokens'] == 20"
check_answer "chat (thinking): reasoning separated from content" "reasoning(msg(r)) and '</think>' not in (msg(r)['content'] or '')"
check_answer "chat (thinking): the answer says 120" "'120' in msg(r)['content']"

status=$(request POST /v1/chat/completions "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"$prompt\"}], \"max_tokens\": $short, \"temperature\": 0.7, \"top_p\": 0.8, \"chat_template_kwargs\": {\"enable_thinking\": false}}")
[[ $status == 200 ]] || { echo "FAIL chat (no thinking) answered $status" >&2; cat "$tmp/body" >&2; exit 1; }
check "chat (no thinking): no reasoning" "not reasoning(msg(r))"
check_answer "chat (no thinking): the answer says 120" "'120' in msg(r)['content']"

status=$(request POST /v1/chat/completions "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"什么是深度学习？\"}], \"max_tokens\": 16}")
[[ $status == 200 ]] || { echo "FAIL chat answered $status" >&2; exit 1; }
check "chat: 什么是深度学习？ is 12 prompt tokens" "r['usage']['prompt_tokens'] == 12"

status=$(request POST /v1/chat/completions "{\"model\": \"$model\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"$prompt\"}], \"max_tokens\": $long}")
[[ $status == 200 ]] || { echo "FAIL streaming chat answered $status" >&2; exit 1; }
check "chat (streaming): server-sent events ending in [DONE]" "r.count('data: {') > 1 and r.rstrip().endswith('data: [DONE]')"

if [[ -n $key ]]; then
  saved=("${auth[@]}")
  auth=()
  status=$(request GET /v1/models)
  [[ $status == 401 ]] || { echo "FAIL no key: GET /v1/models answered $status, want 401" >&2; exit 1; }
  echo "ok   no key: 401"
  auth=(-H "Authorization: Bearer wrong-$key")
  status=$(request POST /v1/chat/completions "{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}")
  [[ $status == 401 ]] || { echo "FAIL wrong key: chat answered $status, want 401" >&2; exit 1; }
  echo "ok   wrong key: 401"
  auth=("${saved[@]}")
  passed=$((passed + 2))
else
  echo "skip auth checks: no API key given (SMOKE_API_KEY / SMOKE_API_KEY_FILE)"
fi
echo "smoke.sh: $((passed + 1)) checks passed against $base"
