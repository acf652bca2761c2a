#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS each (default 45): LogQL parsing
# and evaluation, container runtime lines, HTTP query parameters. A crash
# stops the run; its input is in fuzz/artifacts/<target>/ — turn it into a
# regression test beside the code it broke.
#
#   scripts/fuzz.sh            # every target
#   scripts/fuzz.sh logql      # one
set -euo pipefail  # pipefail: a crash fails the run through `tail`
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-45}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(logql runtime_lines query_params)

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# libFuzzer's instrumentation needs nightly flags: use a nightly toolchain
# when there is one, else let the stable compiler accept them.
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "fuzzing $target for ${seconds}s"
  # libFuzzer reports every new input; keep the end (a crash's report, or
  # the final stats).
  cargo "${toolchain[@]}" fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
    tail -n 40
done
