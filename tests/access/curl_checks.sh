#!/usr/bin/env bash
# The query service from a shell with curl, as a non-Python client would use it.
#   bash curl_checks.sh http://127.0.0.1:PORT   (sources "runs" = store, "run" = archive)
set -u
BASE=${1:?usage: curl_checks.sh BASE_URL}
fail=0
C="curl -sS -m 30 -g"

check() {   # name expected_status url [extra curl args...]
  local name=$1 want=$2 url=$3; shift 3
  local got
  got=$($C -o /tmp/curl_body.$$ -w '%{http_code}' "$@" "$url") || got="curl-failed"
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: HTTP $got, expected $want: $(head -c 300 /tmp/curl_body.$$)"; fail=1
  else
    echo "ok   $name ($got)"
  fi
}

check health 200 "$BASE/health"
check tasks-store 200 "$BASE/api/v1/tasks?source=runs&filter=%7B%22status%22%3A%22ERROR%22%7D&projection=task_id,activity_id"
store=$(cat /tmp/curl_body.$$)
check tasks-archive 200 "$BASE/api/v1/tasks?source=run&filter=%7B%22status%22%3A%22ERROR%22%7D&projection=task_id,activity_id"
arch=$(cat /tmp/curl_body.$$)
# the same answer from both backends (only the source name differs)
if [ "${store/\"runs\"/\"X\"}" != "${arch/\"run\"/\"X\"}" ]; then echo "FAIL store and archive differ"; fail=1; fi
case "$arch" in *'"activity_id":"evaluate"'*) echo "ok   failed task is evaluate";; *) echo "FAIL no evaluate in $arch"; fail=1;; esac
check post-query 200 "$BASE/api/v1/tasks/query" -X POST -H 'Content-Type: application/json' \
  -d '{"source":"run","filter":{"rank":{"$in":[1,2]}},"limit":5,"projection":["rank"]}'
check stream 200 "$BASE/api/v1/tasks/stream?source=run&projection=task_id"
lines=$(wc -l < /tmp/curl_body.$$)
[ "$lines" -eq 148 ] && echo "ok   stream has 148 lines" || { echo "FAIL stream has $lines lines"; fail=1; }
check stats 200 "$BASE/api/v1/stats?source=runs&by=rank"
check prov-n 200 "$BASE/api/v1/prov?source=run&format=provn"
check openapi 200 "$BASE/openapi.json"
check bad-json 400 "$BASE/api/v1/tasks?source=run&filter=%7Bnope"
check bad-op 400 "$BASE/api/v1/tasks?source=run&filter=%7B%22rank%22%3A%7B%22%24where%22%3A1%7D%7D"
check huge-limit 400 "$BASE/api/v1/tasks?source=run&limit=99999999"
check traversal 400 "$BASE/api/v1/tasks?source=..%2F..%2Fetc%2Fpasswd"
check unknown-source 404 "$BASE/api/v1/tasks?source=other"
check bad-task 400 "$BASE/api/v1/tasks/zz..zz?source=run"
check traversal-path 404 "$BASE/api/v1/tasks/..%2F..%2Fetc?source=run"
rm -f /tmp/curl_body.$$
[ $fail -eq 0 ] && echo "all curl checks passed"
exit $fail
