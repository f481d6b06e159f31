# Sourced by scripts/bootstrap.sh and scripts/build_pgo.sh.
#
# run_logged CMD...: runs CMD with its output in a temporary log (Meson's and ninja's chatter stays
# out of the way); on failure prints the log's end, named by the calling script, and exits 1, so an
# error is never hidden.
run_logged() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    echo "$(basename "$0" .sh): '$*' failed; the end of its output:" >&2
    tail -n 60 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}
