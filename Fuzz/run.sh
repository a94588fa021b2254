#!/usr/bin/env bash
# Builds the fuzzers (libFuzzer + AddressSanitizer) and runs each for SECONDS (default 600),
# starting from its corpus in Fuzz/corpus/NAME. New inputs go to a temporary directory (the
# repository's corpus is only read); a crash leaves its input in Fuzz/artifacts/ and fails the run
# (make it a regression test, then add the input to the corpus).
#
#   Fuzz/run.sh [SECONDS]            (make fuzz FUZZ_SECONDS=600; CI runs 60)
#   FUZZERS="fuzz-http-handler" Fuzz/run.sh 60     (only the fuzzers named)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
# Optimised (-c release) with DEBUG defined, so the libraries' `#if DEBUG` checks (a slot
# released twice, a buffer's home) stay, as do preconditions and the fuzzers' own checks. An
# -Onone build spends most of its time in generic and reference-counting overhead
# (fuzz-http-handler: about 4x slower).
build=(swift build -c release -Xswiftc -DDEBUG -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld)
"${build[@]}" >/dev/null
bin=$("${build[@]}" --show-bin-path)
# Every file libFuzzer writes for a finding (crash-, leak-, timeout-, oom-, slow-unit-) goes under
# artifacts/ (git-ignored), by an absolute prefix. Without -artifact_prefix a fuzzing run writes
# them to its working directory, a seed that crashes while the corpus loads included (a crash-
# file identical to a seed once sat untracked in Fuzz/ that way). Replaying one input writes none.
mkdir -p artifacts
artifacts="$PWD/artifacts/"
# New inputs go to a temporary directory in memory where there is one: libFuzzer writes every new
# or reduced input as a file, and creating files on /tmp's disk (thousands of entries here) took
# about a tenth of fuzz-pools' time (10-17% more exec/s from /dev/shm in 60 s runs).
scratch=/dev/shm
[[ -d $scratch && -w $scratch ]] || scratch=${TMPDIR:-/tmp}
work=
trap '[[ -n $work ]] && rm -rf "$work"' EXIT
status=0
for source in Sources/fuzz-*/; do
    name=$(basename "$source")
    if [[ -n "${FUZZERS:-}" && " $FUZZERS " != *" $name "* ]]; then continue; fi
    work=$(mktemp -d -p "$scratch" fuzz.XXXXXX)
    log="$work/log"
    corpus="corpus/${name#fuzz-}"
    dict=()
    [[ -f "$corpus.dict" ]] && dict=(-dict="$corpus.dict")
    options=()  # more libFuzzer flags for this fuzzer, one line (e.g. -max_len=2048)
    [[ -f "$corpus.options" ]] && read -r -a options <"$corpus.options"
    # SWIFT_BACKTRACE off: on a crash, libFuzzer's own report is wanted, not a symbolicating hang.
    if SWIFT_BACKTRACE=enable=no "$bin/$name" "$work" "$corpus" "${dict[@]}" "${options[@]}" -max_total_time="$seconds" \
        -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)
        rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        echo "$name: ${runs:-ran}, ${rate:-?} exec/s (no crash; corpus $(ls "corpus/${name#fuzz-}" | wc -l) seeds + $(ls "$work" | grep -vc '^log$') new)"
    else
        echo "$name: FAILED" >&2
        grep -E 'Fatal error|ERROR: |SUMMARY|Test unit written' "$log" | head -10 >&2
        echo "replay: (cd $PWD && $bin/$name artifacts/crash-...)" >&2
        status=1
    fi
    rm -rf "$work"
done
exit $status
