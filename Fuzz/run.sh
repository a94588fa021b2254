#!/usr/bin/env bash
# Builds the fuzzers (libFuzzer + AddressSanitizer) and runs each for SECONDS (default 600),
# starting from its corpus in Fuzz/corpus/NAME. New inputs go to a temporary directory (the
# repository's corpus is only read); a crash leaves its input in Fuzz/artifacts/ and fails the run
# (make it a regression test, then add the input to the corpus).
#
#   Fuzz/run.sh [SECONDS]            (make fuzz FUZZ_SECONDS=600; CI runs 60)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld >/dev/null
bin=$(swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld --show-bin-path)
mkdir -p artifacts
status=0
for source in Sources/fuzz-*/; do
    name=$(basename "$source")
    work=$(mktemp -d)
    log="$work/log"
    corpus="corpus/${name#fuzz-}"
    dict=()
    [[ -f "$corpus.dict" ]] && dict=(-dict="$corpus.dict")
    # SWIFT_BACKTRACE off: on a crash, libFuzzer's own report is wanted, not a symbolicating hang.
    if SWIFT_BACKTRACE=enable=no "$bin/$name" "$work" "$corpus" "${dict[@]}" -max_total_time="$seconds" \
        -artifact_prefix=artifacts/ -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)
        echo "$name: ${runs:-ran} (no crash; corpus $(ls "corpus/${name#fuzz-}" | wc -l) seeds + $(ls "$work" | grep -vc '^log$') new)"
    else
        echo "$name: FAILED" >&2
        grep -E 'Fatal error|ERROR: |SUMMARY|Test unit written' "$log" | head -10 >&2
        echo "replay: $bin/$name artifacts/crash-..." >&2
        status=1
    fi
    rm -rf "$work"
done
exit $status
