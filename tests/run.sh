#!/usr/bin/env bash
# Runs every test of postgate: the Rust tests (cargo nextest, or cargo test) and the real-client
# interop suite (pytest driving boto3, the AWS CLI and minio-py against the built server; the
# Node clients in tests/interop/node when that folder exists).
#
# Does its own set-up, idempotently: a venv in .venv/ with the newest boto3, awscli, minio,
# selenium and pytest; `npm ci` (or `npm install`) in tests/interop/node; `cargo build`. It installs no system
# packages (.ci/run does that, as root). Exits non-zero when anything fails; the last line is
# "summary: N passed, N failed".
#
# Environment: PYTHON (default python3) makes the venv; PYTEST_ARGS is passed to pytest
# (e.g. PYTEST_ARGS="-k awscli"); SKIP_RUST=1 skips the Rust tests, SKIP_FUZZ=1 the fuzz
# targets' short run (fuzz/run.sh short), SKIP_SOAK=1 the 2-minute soak (benches/soak.rs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/postgate-run.XXXXXX")"
trap 'rm -rf "$LOGS"' EXIT

# Each step prints the seconds since the start; the summary lists every step with its own
# seconds (wall time), so that a CI log tells where the time went. CI_SETUP_SECS (from .ci/run)
# adds the system set-up that ran before this script.
STEP_NAMES=()
STEP_SECS=()
[[ -n "${CI_SETUP_SECS:-}" ]] && { STEP_NAMES+=("ci set-up (.ci/run: apt, cargo-fuzz)"); STEP_SECS+=("$CI_SETUP_SECS"); }
step_start=$SECONDS
step() {
    step_close
    STEP_NAMES+=("$*")
    step_start=$SECONDS
    printf '\n==> [%ds] %s\n' "$((SECONDS - START))" "$*"
}
step_close() { # gives the running step its seconds
    local n=${#STEP_NAMES[@]}
    [[ $n -gt ${#STEP_SECS[@]} ]] && STEP_SECS+=("$((SECONDS - step_start))")
    return 0
}
step_table() {
    step_close
    echo "steps (seconds):"
    local i
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %6d  %s\n' "${STEP_SECS[$i]}" "${STEP_NAMES[$i]}"
    done
    printf '  %6d  %s\n' "$((SECONDS - START))" "total (run.sh)"
}
die() { printf '\nrun.sh: %s\n' "$*" >&2; step_table; echo "summary: 0 passed, 1 failed"; exit 1; }

# --- set-up ----------------------------------------------------------------------------------
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
step "Python venv ($VENV)"
if [[ ! -x "$PY" ]] || ! "$PY" -c 'import sys' 2>/dev/null; then
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV" || die "cannot create the venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# selenium drives headless Chromium in test_browser.py; awscrt gives botocore the CRC32C and
# CRC64NVME checksums (test_conformance.py).
"$PY" -m pip install -q --upgrade boto3 awscli minio pytest selenium awscrt || die "pip install failed"
"$PY" -m pip list --format=freeze 2>/dev/null | grep -iE '^(boto3|botocore|awscli|minio|pytest|selenium|awscrt)==' | tr '\n' ' '
echo

NODE_DIR="$ROOT/tests/interop/node"
if [[ -f "$NODE_DIR/package.json" ]]; then
    step "npm packages ($NODE_DIR)"
    command -v npm >/dev/null || die "npm is not installed"
    npm_flags=(--no-audit --no-fund --loglevel=error)
    if [[ -f "$NODE_DIR/package-lock.json" ]]; then
        # npm ci wipes node_modules: only when the lock file changed since the last install.
        if [[ ! -f "$NODE_DIR/node_modules/.package-lock.json" \
              || "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules/.package-lock.json" ]]; then
            (cd "$NODE_DIR" && npm ci "${npm_flags[@]}") || die "npm ci failed"
        else
            echo "node_modules up to date"
        fi
    else
        (cd "$NODE_DIR" && npm install "${npm_flags[@]}") || die "npm install failed"
    fi
fi

# With the Rust tests to come, the tests are built here too: `cargo build` alone would build
# the server and its dependencies with the features of [dependencies] only, and nextest would
# then build reqwest and postgate again with those the dev-dependencies add. When the tests do
# not compile, the server alone is built, so that the interop suite still runs.
if [[ "${SKIP_RUST:-0}" != 1 ]]; then
    step "cargo build --tests (the server and every test)"
    cargo build --quiet --tests || cargo build --quiet || die "cargo build failed"
else
    step "cargo build"
    cargo build --quiet || die "cargo build failed"
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export POSTGATE_BIN="$TARGET_DIR/debug/postgate"
[[ -x "$POSTGATE_BIN" ]] || die "no binary at $POSTGATE_BIN after cargo build"

# --- tests -----------------------------------------------------------------------------------
passed=0
failed=0
failures=()

count() { # count FILE LINE-REGEX WORD -> sum of "N WORD" over the runner's summary lines
    { grep -E "$2" "$1" || true; } | { grep -oE "[0-9]+ $3" || true; } \
        | awk '{s+=$1} END {print s+0}'
}

if [[ "${SKIP_RUST:-0}" != 1 ]]; then
    if cargo nextest --version >/dev/null 2>&1; then
        step "cargo nextest run"
        rc=0
        cargo nextest run --no-fail-fast --no-tests=warn 2>&1 | tee "$LOGS/rust.log" || rc=$?
        p=$(count "$LOGS/rust.log" '^ *Summary .* tests? run:' passed)
        f=$(count "$LOGS/rust.log" '^ *Summary .* tests? run:' failed)
        # nextest does not run doctests.
        step "cargo test --doc"
        cargo test --doc 2>&1 | tee "$LOGS/doc.log" || rc=$?
        p=$((p + $(count "$LOGS/doc.log" '^test result:' passed)))
        f=$((f + $(count "$LOGS/doc.log" '^test result:' failed)))
    else
        step "cargo test (cargo-nextest not found)"
        rc=0
        cargo test --no-fail-fast 2>&1 | tee "$LOGS/rust.log" || rc=$?
        p=$(count "$LOGS/rust.log" '^test result:' passed)
        f=$(count "$LOGS/rust.log" '^test result:' failed)
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [[ $rc -ne 0 ]]; then
        failures+=("rust tests (exit $rc)")
        [[ $f -gt 0 ]] || failed=$((failed + 1)) # a build error counts as a failure too
    fi
fi

# Soak, CI mode: 2 minutes of mixed traffic beside 1,000 idle and 200 slow connections, on the
# unoptimised build; fails on any failed request or on RSS, descriptors or WAL not staying
# bounded; prints the p99 against its target without gating on it (benches/soak.rs says why).
if [[ "${SKIP_SOAK:-0}" != 1 ]]; then
    step "soak (cargo test --bench soak -- --minutes 2 --p99-report-only)"
    if cargo test --bench soak -- --minutes 2 --every 10 --p99-report-only 2>&1 | tee "$LOGS/soak.log"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("soak")
    fi
fi

# Fuzzing, short mode (fuzz/run.sh): every target for 20 s; each target counts as one test.
if [[ "${SKIP_FUZZ:-0}" != 1 ]]; then
    step "fuzz build (fuzz/run.sh build short)"
    rc=0
    bash fuzz/run.sh build short 2>&1 | tee "$LOGS/fuzz.log" || rc=$?
    step "fuzz/run.sh short"
    [[ $rc -ne 0 ]] || bash fuzz/run.sh short 2>&1 | tee -a "$LOGS/fuzz.log" || rc=$?
    p=$({ grep -cE '^[a-z0-9_]+ +ok cpu_s=' "$LOGS/fuzz.log" || true; })
    f=$({ grep -cE '^[a-z0-9_]+ +FAIL cpu_s=' "$LOGS/fuzz.log" || true; })
    passed=$((passed + p))
    failed=$((failed + f))
    if [[ $rc -ne 0 ]]; then
        failures+=("fuzz targets (exit $rc)")
        [[ $f -gt 0 ]] || failed=$((failed + 1)) # a build error counts as a failure too
    fi
fi

step "interop suite (pytest tests/interop)"
rc=0
# shellcheck disable=SC2086
"$PY" -m pytest tests/interop -p no:cacheprovider -q -rfE --junitxml="$LOGS/interop.xml" \
    ${PYTEST_ARGS:-} || rc=$?
if [[ -f "$LOGS/interop.xml" ]]; then
    read -r p f < <("$PY" - "$LOGS/interop.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
EOF
    )
else
    p=0 f=0
fi
passed=$((passed + p))
failed=$((failed + f))
if [[ $rc -ne 0 ]]; then
    failures+=("interop suite (pytest exit $rc)")
    [[ $f -gt 0 ]] || failed=$((failed + 1))
fi

# --- summary ---------------------------------------------------------------------------------
echo
step_table
elapsed=$((SECONDS - START))
if [[ ${#failures[@]} -eq 0 ]]; then
    echo "run.sh: all tests passed in ${elapsed}s"
    echo "summary: $passed passed, $failed failed"
    exit 0
fi
echo "run.sh: FAILED in ${elapsed}s: $(IFS=';'; echo "${failures[*]}")"
echo "summary: $passed passed, $failed failed"
exit 1
