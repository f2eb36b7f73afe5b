#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target of fuzz/ (the target functions of src/fuzz/mod.rs)
# run long, one at a time, on its corpus tests/fuzz/corpus/<target>/, which is then
# minimised again (libFuzzer's -set_cover_merge: the fewest inputs that keep its
# coverage, the crash-* regression inputs kept whatever) so what is committed stays small.
#
#   FUZZ_RUNS      executions per target (default 10000000)
#   FUZZ_SECONDS   or a time per target instead (default 0: no time limit)
#   FUZZ_TARGETS   which targets (default: all of fuzz/Cargo.toml)
#   FUZZ_SANITIZER address (default, cargo-fuzz's: memory errors in the unsafe code of
#                  dependencies) or none (about twice the executions)
#
# cargo-fuzz needs rustc's unstable flags (-Zsanitizer, sancov options); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it have them. A crash stops the run with the input
# saved under fuzz/artifacts/<target>/: replay it with
#   cargo fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/crash-...
# then fix the mechanism and add a regression test named for what it guards.
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=${FUZZ_RUNS:-10000000}
seconds=${FUZZ_SECONDS:-0}
sanitizer=${FUZZ_SANITIZER:-address}
targets=${FUZZ_TARGETS:-$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^simgate')}

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
host=$(rustc -vV | sed -n 's/^host: //p')

# Inputs longer than libFuzzer's default 4096 bytes where the parser has a bound to cross.
max_len() {
    case $1 in
        at_stream) echo 10000 ;;
        contract_json) echo 9000 ;;
        *) echo 4096 ;;
    esac
}

summary=()
for t in $targets; do
    corpus=tests/fuzz/corpus/$t
    mkdir -p "$corpus"
    log=$(mktemp)
    echo "fuzz: $t (runs $runs, seconds $seconds, sanitizer $sanitizer)"
    limit=()
    if [ "$seconds" != 0 ]; then limit=(-max_total_time="$seconds"); fi
    if ! cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -runs="$runs" "${limit[@]}" -max_len="$(max_len "$t")" -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $t FAILED; the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    rm -f "$log"
    min=$(mktemp -d)
    "fuzz/target/$host/release/$t" -set_cover_merge=1 "$min" "$corpus" >/dev/null 2>&1
    cp "$corpus"/crash-* "$min"/ 2>/dev/null || true
    rm -rf "$corpus" && mkdir -p "$corpus" && cp "$min"/* "$corpus"/ && rm -rf "$min"
    summary+=("$t: ${done_line:-?}, $cov, corpus $(ls "$corpus" | wc -l) files")
    echo "fuzz: ${summary[-1]}"
done
printf '%s\n' "fuzz: all targets passed" "${summary[@]}"
