#!/usr/bin/env bash
# Fuzzes postgate's parsers with cargo-fuzz (libFuzzer, AddressSanitizer).
#
#   fuzz/run.sh short [TARGET...]          every target for $FUZZ_SHORT_SECS (20) seconds, as CI
#                                          does; exits non-zero on any crash, hang or memory blow-up
#   fuzz/run.sh long CPU_SECONDS [TARGET...]  each target, one after the other, at nice 19, until it
#                                          has used CPU_SECONDS of CPU time (restarted on its own
#                                          corpus until then); prints CPU time, executions, corpus
#                                          and coverage per target
#
# Limits on every input: -timeout (a hang), -rss_limit_mb and -malloc_limit_mb (no single
# allocation may exceed 32 MB, where inputs are at most 16 KiB). New inputs go to
# fuzz/runs/<target>/corpus (not committed); the seeds in fuzz/corpus/<target>/ are only read.
# Crashes are written to fuzz/artifacts/<target>/; reproduce one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
#
# Toolchain: nightly when rustup has it, else the stable toolchain with RUSTC_BOOTSTRAP=1
# (cargo-fuzz needs -Z flags). cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")"

ALL_TARGETS=(post_form auth sigv4_differential aws_chunked parsers)
mode=${1:-short}
shift || true
case "$mode" in
short) budget=${FUZZ_SHORT_SECS:-20} ;;
long)
	budget=${1:?usage: fuzz/run.sh long CPU_SECONDS [TARGET...]}
	shift
	;;
*)
	echo "usage: fuzz/run.sh short [TARGET...] | long CPU_SECONDS [TARGET...]" >&2
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

# Optimised, as production runs it (overflow wraps there too); AddressSanitizer on.
"${cargo[@]}" fuzz build -O
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
nice=()
[ "$mode" = long ] && nice=(nice -n 19)

max_len() {
	case "$1" in
	post_form | aws_chunked) echo 16384 ;;
	*) echo 4096 ;;
	esac
}

# One libFuzzer run of target $1 for at most $2 seconds; appends "cpu_seconds" to $3.
run_once() {
	local target=$1 secs=$2 log=$3
	mkdir -p "runs/$target/corpus" "artifacts/$target" "corpus/$target"
	"${nice[@]}" /usr/bin/time -f "%U %S" -o "runs/$target/time" \
		"$bin/$target" "runs/$target/corpus" "corpus/$target" \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=32 \
		-max_len="$(max_len "$target")" -print_final_stats=1 \
		-artifact_prefix="artifacts/$target/" >>"$log" 2>&1
}

status=0
summary=()
for target in "${targets[@]}"; do
	log="runs/$target/log"
	mkdir -p "runs/$target"
	: >"$log"
	cpu=0
	ok=1
	if [ "$mode" = short ]; then
		run_once "$target" "$budget" "$log" || ok=0
		cpu=$(tail -1 "runs/$target/time" | awk '{print $1 + $2}')
	else
		# Restart until the CPU budget is spent: the machine may be shared, so wall time says
		# little about how much fuzzing was done.
		while awk -v c="$cpu" -v b="$budget" 'BEGIN { exit !(b - c >= 5) }'; do
			left=$(awk -v c="$cpu" -v b="$budget" 'BEGIN { printf "%d", b - c }')
			run_once "$target" "$left" "$log" || {
				ok=0
				break
			}
			cpu=$(tail -1 "runs/$target/time" | awk -v c="$cpu" '{print c + $1 + $2}')
		done
	fi
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
