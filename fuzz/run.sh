#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the
# other, under `nice -n 19`, and prints one summary line per target.
#
#   fuzz/run.sh [SECONDS-PER-TARGET] [TARGET...]      default: 60 s, all targets
#
# Stable toolchain only: cargo-fuzz drives libFuzzer with `-s none` (no
# sanitizer needs nightly) and RUSTC_BOOTSTRAP=1 for the one unstable rustc
# flag it passes. cargo-fuzz is installed from crates.io when missing.
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET) plus its
# working corpus (fuzz/corpus/TARGET, grown by earlier runs, not committed).
# A crash stops that target and is saved under fuzz/artifacts/TARGET/; replay
# it with `RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --release TARGET FILE` in
# fuzz/. Exit status: non-zero when any target crashed.
#
# Environment: FUZZ_TARGET_DIR (default fuzz/target), FUZZ_JOBS (cargo build
# jobs), FUZZ_LOGS (default fuzz/logs: libFuzzer's full output per target).
set -euo pipefail
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir"

seconds="${1:-60}"
shift || true
all_targets=(proxy_protocol client_hello sniff_detect config path_rules)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then targets=("${all_targets[@]}"); fi

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

target_dir="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"
logs="${FUZZ_LOGS:-$fuzz_dir/logs}"
export RUSTC_BOOTSTRAP=1
# The main workspace's target dir must not leak into this crate's build.
unset CARGO_TARGET_DIR
fuzz=(cargo fuzz)
common=(-s none --release --target-dir "$target_dir")
build_jobs=()
if [[ -n "${FUZZ_JOBS:-}" ]]; then build_jobs=(--jobs "$FUZZ_JOBS"); fi
nice -n 19 "${fuzz[@]}" build "${common[@]}" "${build_jobs[@]}"

# The longest input worth trying per target: past every size limit its
# parser has (the sniff detector's 8 KiB request line, the 16 KiB ClientHello).
max_len() {
  case "$1" in
    sniff_detect) echo 12000 ;;
    client_hello) echo 20000 ;;
    config | path_rules) echo 8192 ;;
    *) echo 1024 ;;
  esac
}

mkdir -p "$logs"
failed=0
summary=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  flags=(
    "-max_total_time=$seconds" "-max_len=$(max_len "$target")" -timeout=10 -rss_limit_mb=2048
    -print_final_stats=1 "-artifact_prefix=artifacts/$target/"
  )
  if [[ -f "dict/$target.dict" ]]; then flags+=("-dict=dict/$target.dict"); fi
  if [[ "$seconds" == 0 ]]; then flags+=(-runs=0); fi
  log="$logs/$target.log"
  echo "== $target: ${seconds}s (log: $log)"
  status=0
  started=$SECONDS
  nice -n 19 "${fuzz[@]}" run "${common[@]}" "$target" "corpus/$target" "seeds/$target" -- "${flags[@]}" \
    >"$log" 2>&1 || status=$?
  ran=$((SECONDS - started))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corpus=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")
  result=ok
  if [[ $status -ne 0 ]]; then
    result="FAILED (exit $status; see $log and artifacts/$target/)"
    failed=1
    tail -n 30 "$log" >&2
  fi
  summary+=("$(printf '%-15s %5ss  execs %-10s cov %-6s ft %-6s corpus %-12s %s' \
    "$target" "$ran" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$result")")
done

echo
printf '%s\n' "${summary[@]}"
exit $failed
