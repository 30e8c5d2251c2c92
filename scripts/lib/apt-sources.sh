# shellcheck shell=bash
# Reads the machine's own apt configuration, so that scripts which add a suite (e.g. backports)
# use the mirror this machine already uses instead of a host name written into the repository:
# the script then works wherever apt works (behind a proxy, an internal mirror, a snapshot
# archive). Sourced, never run.
#
# Both formats apt reads are understood (sources.list(5)):
#   one-line  deb [opt=value ...] URI SUITE [COMPONENT ...]      in sources.list and *.list
#   deb822    stanzas of Types:/URIs:/Suites:/Signed-By:/Enabled: in *.sources
# Comments (#) and disabled stanzas (Enabled: no) are skipped.

# The files apt reads its sources from, in apt's order; overridable for tests.
apt_source_files() {
    local dir=${APT_SOURCES_DIR:-/etc/apt}
    [[ -f $dir/sources.list ]] && printf '%s\n' "$dir/sources.list"
    local file
    for file in "$dir"/sources.list.d/*.list "$dir"/sources.list.d/*.sources; do
        [[ -f $file ]] && printf '%s\n' "$file"
    done
    return 0
}

# Prints "URI<TAB>SIGNED-BY" (SIGNED-BY may be empty) for every enabled binary ("deb") source
# that carries SUITE, one line per URI, in the order apt reads them.
apt_sources_for_suite() { # <suite>
    local suite=$1 file
    while IFS= read -r file; do
        case $file in
            *.sources) apt_deb822_entries "$suite" "$file" ;;
            *) apt_one_line_entries "$suite" "$file" ;;
        esac
    done < <(apt_source_files)
}

# One-line format: "deb [options] uri suite components...". Options are space-separated
# key=value pairs inside brackets; signed-by is the one we carry over.
apt_one_line_entries() { # <suite> <file>
    awk -v want="$1" '
        { sub(/#.*/, "") }
        $1 != "deb" { next }
        {
            signed = ""; i = 2
            if ($2 ~ /^\[/) {
                line = $0; sub(/^[ \t]*deb[ \t]+\[/, "", line)
                options = line; sub(/\].*$/, "", options)
                rest = line; sub(/^[^\]]*\][ \t]*/, "", rest)
                n = split(options, pairs, /[ \t]+/)
                for (k = 1; k <= n; k++) if (tolower(pairs[k]) ~ /^signed-by=/) { signed = pairs[k]; sub(/^[^=]*=/, "", signed) }
                split(rest, fields, /[ \t]+/)
                uri = fields[1]; s = fields[2]
            } else { uri = $2; s = $3 }
            if (s == want && uri != "") printf "%s\t%s\n", uri, signed
        }' "$2"
}

# deb822 format: stanzas separated by blank lines, "Field: value" with continuation lines that
# start with white space (a value may go on over several lines; an inline Signed-By key block is
# such a continuation too: it is not carried over, only a keyring path is).
apt_deb822_entries() { # <suite> <file>
    awk -v want="$1" '
        function flush(   n, k, uris, suites, types, found, signed) {
            if (stanza_fields == 0) return
            found = 0
            n = split(field["types"], types, /[ \t]+/); for (k = 1; k <= n; k++) if (types[k] == "deb") found++
            n = split(field["suites"], suites, /[ \t]+/); for (k = 1; k <= n; k++) if (suites[k] == want) found++
            if (tolower(field["enabled"]) == "no" || found < 2) { delete field; stanza_fields = 0; return }
            signed = field["signed-by"]; if (signed !~ /^\//) signed = ""
            n = split(field["uris"], uris, /[ \t]+/)
            for (k = 1; k <= n; k++) if (uris[k] != "") printf "%s\t%s\n", uris[k], signed
            delete field; stanza_fields = 0
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ {
            if (name != "signed-by") { value = $0; gsub(/^[ \t]+|[ \t]+$/, "", value); field[name] = field[name] " " value }
            next
        }
        {
            name = $0; sub(/:.*/, "", name); name = tolower(name)
            value = $0; sub(/^[^:]*:[ \t]*/, "", value); sub(/[ \t]+$/, "", value)
            field[name] = value; stanza_fields++
        }
        END { flush() }' "$2"
}
