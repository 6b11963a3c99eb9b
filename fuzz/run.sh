#!/usr/bin/env bash
# Fuzzes postgate's parsers with cargo-fuzz (libFuzzer, AddressSanitizer).
#
#   fuzz/run.sh short [TARGET...]          every target for $FUZZ_SHORT_SECS (20) seconds, as CI
#                                          does, $FUZZ_JOBS (one per core) at once; exits non-zero
#                                          on any crash, hang or memory blow-up
#   fuzz/run.sh long CPU_SECONDS [TARGET...]  each target, one after the other, at nice 19, until it
#                                          has used CPU_SECONDS of CPU time (a shared machine makes
#                                          wall time meaningless); a new run continues from the
#                                          corpus of the last
#   fuzz/run.sh build short|long           only the build that mode runs
#
# Both print, per target: CPU seconds, executions, coverage (cov: edges, ft: features), corpus
# (entries/bytes) and peak RSS, and write them to fuzz/runs/summary-<mode>.txt.
#
# Limits on every input: -timeout (a hang), -rss_limit_mb and -malloc_limit_mb (no single
# allocation may exceed 32 MB, where inputs are at most 16 KiB). New inputs go to
# fuzz/runs/<target>/corpus (not committed); the seeds in fuzz/corpus/<target>/ are only read.
# Crashes are written to fuzz/artifacts/<target>/; reproduce one with
#   cargo +nightly fuzz run -O --codegen-units 16 <target> fuzz/artifacts/<target>/<file>
#
# Toolchain: nightly when rustup has it, else the stable toolchain with RUSTC_BOOTSTRAP=1
# (cargo-fuzz needs -Z flags). cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")"

ALL_TARGETS=(post_form auth sigv4_differential aws_chunked parsers)
usage="usage: fuzz/run.sh short [TARGET...] | long CPU_SECONDS [TARGET...] | build short|long"
mode=${1:-short}
shift || true
build_only=0
if [ "$mode" = build ]; then # only the build a mode runs (tests/run.sh times it as a step)
	build_only=1
	mode=${1:?$usage}
	shift
fi
case "$mode" in
short) budget=${FUZZ_SHORT_SECS:-20} ;;
long)
	budget=0
	if [ $build_only = 0 ]; then
		budget=${1:?$usage}
		shift
	fi
	;;
*)
	echo "$usage" >&2
	exit 2
	;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

if cargo +nightly --version >/dev/null 2>&1; then
	cargo=(cargo +nightly)
else
	cargo=(cargo)
	export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	cargo install cargo-fuzz --locked
fi

# Optimised, as production runs it (overflow wraps there too); AddressSanitizer on. Both modes:
# a debug build without ASan (--dev -s none: 416 CPU-seconds from nothing) missed, in 19 CPU-s,
# a planted panic on a 4-byte prefix of a date. -s none would also make -malloc_limit_mb and
# leak detection do nothing (libFuzzer needs a sanitizer runtime's malloc hooks for both).
# 16 codegen units rather than cargo-fuzz's 1 for optimised builds: a clean build took 560 s
# against 818 s (CI, 2 cores), and the short run did not lose speed (20 s per target: 22,232 to
# 153,482 executions against 15,638 to 120,517 with one unit, the same seeds).
"${cargo[@]}" fuzz build -O --codegen-units 16
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
[ $build_only = 0 ] || exit 0
nice=()
[ "$mode" = long ] && nice=(nice -n 19)

max_len() {
	case "$1" in
	post_form | aws_chunked) echo 16384 ;;
	*) echo 4096 ;;
	esac
}

# Runs target $1 once: for $2 seconds of wall time (short), or (long) until the fuzzer has used
# $2 seconds of CPU time, when it is interrupted (libFuzzer then prints its final stats and
# exits 72). Its CPU time goes to runs/$1/time, its output to $3.
run_once() {
	local target=$1 secs=$2 log=$3 wall=$2 rc=0
	mkdir -p "runs/$target/corpus" "artifacts/$target" "corpus/$target"
	[ "$mode" = long ] && wall=0 # no wall-clock limit: the watchdog below stops it
	"${nice[@]}" /usr/bin/time -f "%U %S" -o "runs/$target/time" \
		"$bin/$target" "runs/$target/corpus" "corpus/$target" \
		-max_total_time="$wall" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=32 \
		-max_len="$(max_len "$target")" -print_final_stats=1 \
		-artifact_prefix="artifacts/$target/" >>"$log" 2>&1 &
	local timer=$!
	if [ "$mode" = long ]; then
		local tick fuzzer used
		tick=$(getconf CLK_TCK)
		sleep 1
		fuzzer=$(pgrep -P "$timer" | head -1)
		while kill -0 "$timer" 2>/dev/null; do
			used=$(awk -v t="$tick" '{print int(($14 + $15) / t)}' "/proc/$fuzzer/stat" 2>/dev/null || echo 0)
			if [ "$used" -ge "$secs" ]; then
				kill -INT "$fuzzer" 2>/dev/null || true
				break
			fi
			sleep 5
		done
	fi
	wait "$timer" || rc=$?
	[ $rc = 72 ] && rc=0 # interrupted by the watchdog
	return $rc
}

# Short mode runs $FUZZ_JOBS targets at once (default: one per core; each fuzzer is one
# process on one core, so each still gets its 20 s of a core); long mode one after the other.
jobs=1
[ "$mode" = short ] && jobs=${FUZZ_JOBS:-$(nproc)}
for target in "${targets[@]}"; do
	mkdir -p "runs/$target"
	: >"runs/$target/log"
done
declare -A exit_of=()
running=()
for target in "${targets[@]}"; do
	run_once "$target" "$budget" "runs/$target/log" &
	running+=("$!:$target")
	if [ ${#running[@]} -ge "$jobs" ]; then
		pid=${running[0]%%:*}
		rc=0
		wait "$pid" || rc=$?
		exit_of[${running[0]#*:}]=$rc
		running=("${running[@]:1}")
	fi
done
for job in "${running[@]}"; do
	rc=0
	wait "${job%%:*}" || rc=$?
	exit_of[${job#*:}]=$rc
done

status=0
summary=()
for target in "${targets[@]}"; do
	log="runs/$target/log"
	ok=1
	[ "${exit_of[$target]}" = 0 ] || ok=0
	cpu=$(tail -1 "runs/$target/time" | awk '{print $1 + $2}')
	execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | awk '{s += $2} END {print s + 0}' || true)
	last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
	cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | awk '{print $2}' || true)
	ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | awk '{print $2}' || true)
	corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | awk '{print $2}' || true)
	rss=$(grep -oE 'stat::peak_rss_mb: +[0-9]+' "$log" | awk '{print $2}' | sort -n | tail -1 || true)
	line=$(printf '%-20s %s cpu_s=%s execs=%s cov=%s ft=%s corpus=%s peak_rss_mb=%s' \
		"$target" "$([ $ok = 1 ] && echo ok || echo FAIL)" "$cpu" "$execs" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}")
	echo "$line"
	summary+=("$line")
	if [ $ok = 0 ]; then
		status=1
		grep -E 'ERROR|panicked|Test unit written|SUMMARY' "$log" | head -20 >&2 || true
	fi
done
printf '%s\n' "${summary[@]}" >"runs/summary-$mode.txt"
exit $status
