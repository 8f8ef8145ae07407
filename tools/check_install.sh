#!/usr/bin/env bash
# hypertape from outside, as a user gets it: a release build `meson install`ed into a temporary
# prefix, then programs built against the installed library with nothing but pkg-config's flags
# (tools/example.c with gcc and clang, shared and static; C++ through the extern "C" guards), and a
# parent meson project that takes hypertape as a subproject. Prints "N passed, N failed" last and
# exits non-zero if a check failed. tests/run calls it, so CI runs it.
#
# usage: tools/check_install.sh [BUILDDIR]
# BUILDDIR (default build-install) is a release build, configured here if it is not one yet;
# tests/run passes its own release build, so the library is not compiled twice. Its prefix is set
# to the temporary one for the install and given back on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-build-install}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" --buildtype=release > "$tmp/setup.log" || { cat "$tmp/setup.log"; exit 1; }
fi
prefix_of='import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))'
own_prefix=$(meson introspect "$build" --buildoptions | python3 -c "$prefix_of")
trap 'meson configure "$build" -Dprefix="$own_prefix" > /dev/null; rm -rf "$tmp"' EXIT
passed=0 failed=0

# check NAME COMMAND...: runs COMMAND with its output in a log; on failure prints the log's end.
# set -e does not act inside a command whose status is tested, so the steps below chain with &&.
check() {
    local name=$1 log=$tmp/log
    shift
    if "$@" > "$log" 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAILED: $name"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
}

# The release build (LTO as the project sets it) installed into the temporary prefix, with the
# command it installs.
install_release() {
    meson configure "$build" -Dprefix="$prefix" && meson install -C "$build" &&
        [ -n "$(find "$prefix" -name hypertape.pc)" ] && "$prefix/bin/hypertape" --help
}

# Every installed header compiles on its own, as C11 and as C++.
headers_alone() {
    local h
    for h in "$prefix"/include/hypertape/*.h; do
        echo "#include \"${h##*/}\"" > "$tmp/one.c" && cp "$tmp/one.c" "$tmp/one.cc" &&
            gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"${h%/*}" "$tmp/one.c" &&
            clang++ -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"${h%/*}" "$tmp/one.cc" || return 1
    done
}

# libhypertape.a is an ordinary archive: ar lists and extracts it (a thin one it does not), every
# object holds code or data the linker can use (a slim LTO object's are all empty) and none holds
# gcc's LTO IR (which only the same gcc reads, and which gcc re-optimizes at every user's link).
archive_ordinary() {
    local a=$libdir/libhypertape.a o
    mkdir "$tmp/objs" && (cd "$tmp/objs" && ar x "$a") && [ "$(ar t "$a" | wc -l)" -gt 0 ] || return 1
    for o in "$tmp"/objs/*.o; do
        size -A "$o" | awk '$1 ~ /^\.(text|data|rodata|bss)/ && $2 > 0 {n++} END {exit !n}' ||
            { echo "$o: no machine code or data"; return 1; }
        ! size -A "$o" | grep -q '^\.gnu\.lto' || { echo "$o: holds LTO IR"; return 1; }
    done
}

# example CC shared|static: builds tools/example.c with CC from pkg-config's flags and runs it; it
# must exit 0 and print a line. With both libraries installed -lhypertape finds the shared one;
# -l:libhypertape.a asks the linker for the archive, and the binary must not need the .so.
example() {
    local cc=$1 kind=$2 exe=$tmp/example-$1-$2 libs
    if [ "$kind" = shared ]; then
        "$cc" "$root/tools/example.c" $(pkg-config --cflags --libs hypertape) -o "$exe" &&
            LD_LIBRARY_PATH=$libdir "$exe" > "$exe.out" || return 1
    else
        libs=$(pkg-config --static --libs hypertape |
            sed -E 's/(^| )-lhypertape( |$)/\1-l:libhypertape.a\2/')
        "$cc" "$root/tools/example.c" $(pkg-config --cflags hypertape) $libs -o "$exe" || return 1
        ! readelf -d "$exe" | grep -q libhypertape || { echo "$exe needs libhypertape.so"; return 1; }
        "$exe" > "$exe.out" || return 1
    fi
    cat "$exe.out" && [ -s "$exe.out" ]
}

# A C++ program calls the library through the installed headers: it links only if the headers give
# the functions C linkage. (It names one function; rename it here if that function is renamed.)
cxx_program() {
    local h
    echo '#include <cstdio>' > "$tmp/prog.cc"
    for h in "$prefix"/include/hypertape/*.h; do echo "#include \"${h##*/}\""; done >> "$tmp/prog.cc"
    echo 'int main() { return std::puts(blo_status_name(BLO_OK)) < 0; }' >> "$tmp/prog.cc"
    clang++ "$tmp/prog.cc" $(pkg-config --cflags --libs hypertape) -o "$tmp/prog-cxx" &&
        LD_LIBRARY_PATH=$libdir "$tmp/prog-cxx"
}

# A parent meson project with this checkout as subprojects/hypertape gets the library from
# dependency('hypertape') (forced to the subproject, whatever pkg-config would find).
subproject() {
    local p=$tmp/parent
    mkdir -p "$p/subprojects" && ln -s "$root" "$p/subprojects/hypertape" &&
        cp "$root/tools/example.c" "$p/prog.c" &&
        printf "%s\n" "project('parent', 'c')" \
            "executable('prog', 'prog.c', dependencies : dependency('hypertape'))" > "$p/meson.build" &&
        env -u PKG_CONFIG_PATH meson setup "$p/build" "$p" --force-fallback-for=hypertape &&
        ninja -C "$p/build" && "$p/build/prog" > "$p/prog.out" && cat "$p/prog.out" && [ -s "$p/prog.out" ]
}

# installed COMMAND...: COMMAND, which needs the installed library (each counts as failed without it).
installed() {
    [ -n "$pc" ] || { echo "not run: nothing was installed"; return 1; }
    "$@"
}

check "meson install into a temporary prefix" install_release
pc=$(find "$prefix" -name hypertape.pc 2>/dev/null || true)
export PKG_CONFIG_PATH=${pc%/*}
libdir=${PKG_CONFIG_PATH%/pkgconfig}
check "installed headers compile alone (C11, C++)" installed headers_alone
check "libhypertape.a is an ordinary archive, machine code only" installed archive_ordinary
for cc in gcc clang; do
    check "tools/example.c, $cc, shared library" installed example "$cc" shared
    check "tools/example.c, $cc, static library" installed example "$cc" static
done
check "C++ program through the installed headers" installed cxx_program
check "meson subproject: dependency('hypertape')" subproject

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
