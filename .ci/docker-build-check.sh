#!/usr/bin/env bash
# `make docker-check`: replays the Dockerfile without a Docker engine, to prove the image builds.
#
# It reads the Dockerfile rather than knowing what it says. The build context is every file under
# the context directory that .dockerignore lets through (Docker's matching rules). The `build`
# stage is then replayed into an empty directory that stands for the image's root: each COPY
# copies the files Docker would copy, WORKDIR and ENV are followed, and each RUN is run
# command by command (`a && b`) in the stage's working directory with the host's toolchain.
# Absolute paths in a RUN (`cp ... /diva-signal`) point into that root; package installs
# (apk, apt-get) are skipped, since the host brings its own toolchain. The final stage is
# replayed the same way into a second empty root, from its COPY --from=build lines, and the
# result is run: its ENTRYPOINT with --version, then as a server on a loopback port (its ENV,
# with BIND_IP and PORT set as `docker run -e` would) that must answer /health, pass its
# HEALTHCHECK command, and exit 0 on its STOPSIGNAL.
#
# Anything it does not understand (another instruction, ADD, shell syntax beyond `&&`, COPY
# --from an image) makes it fail and say so, rather than check something else than Docker would build.
# It also fails when the context holds a file that git ignores (build output that .dockerignore
# lets in). The host build is not the image's: it is not musl nor static (`make static-check`
# covers that), and Cargo may come from another Rust release than rust:1-alpine.
#
# Usage: .ci/docker-build-check.sh [CONTEXT-DIR [DOCKERFILE]]   (default: the repository)
# DOCKER_CHECK_BUILD_TIMEOUT: seconds allowed per RUN command (default 900).
set -euo pipefail
shopt -s dotglob nullglob

here=$(cd "$(dirname "$0")/.." && pwd)
context=$(cd "${1:-$here}" && pwd)
dockerfile=${2:-$context/Dockerfile}
build_stage=build
build_timeout=${DOCKER_CHECK_BUILD_TIMEOUT:-900}

fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$dockerfile" ] || fail "no Dockerfile at $dockerfile"

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

# ---- Patterns, as Docker reads them (github.com/moby/patternmatcher) ----

# A Go filepath.Match pattern, with `**` as in .dockerignore, as an anchored extended regex.
to_regex() {
  local p=$1 re="^" i=0 c n=${#1}
  while (( i < n )); do
    c=${p:i:1}
    case $c in
      '*')
        if [[ ${p:i+1:1} == '*' ]]; then
          i=$((i + 1))
          [[ ${p:i+1:1} == / ]] && i=$((i + 1))
          if (( i + 1 >= n )); then re+='.*'; else re+='(.*/)?'; fi
        else
          re+='[^/]*'
        fi ;;
      '?') re+='[^/]' ;;
      '[')  # a character class, copied as it is
        local class=${p:i}
        class=${class%%]*}
        re+="$class]"
        i=$((i + ${#class})) ;;
      '\')
        i=$((i + 1)); c=${p:i:1}
        if [[ $c =~ [[:alnum:]] ]]; then re+=$c; else re+="\\$c"; fi ;;
      '.'|'+'|'('|')'|'|'|'{'|'}'|'^'|'$') re+="\\$c" ;;
      *) re+=$c ;;
    esac
    i=$((i + 1))
  done
  printf '%s$' "$re"
}

# filepath.Clean for the forms that occur here; $1 absolute gives an absolute result.
clean_path() {
  local path=$1 part parts=() out=()
  IFS=/ read -ra parts <<<"$path"
  for part in "${parts[@]}"; do
    case $part in
      ''|.) ;;
      ..) [ ${#out[@]} -gt 0 ] && unset 'out[${#out[@]}-1]' ;;
      *) out+=("$part") ;;
    esac
  done
  local IFS=/ joined
  joined="${out[*]}"
  if [[ $path == /* ]]; then echo "/$joined"; else echo "${joined:-.}"; fi
}

ignore_regex=(); ignore_negated=()
if [ -f "$context/.dockerignore" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    line=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' <<<"$line")
    [[ -z $line || $line == \#* ]] && continue
    negated=0
    if [[ $line == !* ]]; then negated=1; line=${line#!}; fi
    line=$(clean_path "$line"); line=${line#/}
    ignore_regex+=("$(to_regex "$line")"); ignore_negated+=("$negated")
  done < "$context/.dockerignore"
fi
has_negation=0
for n in "${ignore_negated[@]}"; do (( n )) && has_negation=1; done

# True when .dockerignore keeps $1 (relative to the context) out: the last pattern that matches
# it or one of its parent directories decides.
ignored() {
  local path=$1 matched=0 i parent match
  for i in "${!ignore_regex[@]}"; do
    if (( ignore_negated[i] )); then (( matched )) || continue; else (( matched )) && continue; fi
    match=0
    if [[ $path =~ ${ignore_regex[i]} ]]; then
      match=1
    else
      parent=$path
      while [[ $parent == */* ]]; do
        parent=${parent%/*}
        if [[ $parent =~ ${ignore_regex[i]} ]]; then match=1; break; fi
      done
    fi
    (( match )) && matched=$((1 - ignore_negated[i]))
  done
  (( matched ))
}

# ---- The build context ----

context_files=(); declare -A in_context=()
walk() {  # $1: a directory relative to the context, '' for the context itself
  local entry rel
  for entry in "$context/${1:+$1/}"*; do
    rel=${1:+$1/}${entry##*/}
    if [[ -d $entry && ! -L $entry ]]; then
      # An ignored directory is skipped whole unless a `!` pattern may take something back.
      if ignored "$rel" && (( ! has_negation )); then continue; fi
      walk "$rel"
    elif ! ignored "$rel"; then
      context_files+=("$rel"); in_context[$rel]=1
    fi
  done
}
walk ""
echo "== build context: ${#context_files[@]} files under $context after .dockerignore"
if git -C "$context" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  leaked=$(printf '%s\n' "${context_files[@]}" | git -C "$context" check-ignore --stdin || true)
  [ -z "$leaked" ] || fail "the build context holds files git ignores (add them to .dockerignore):
$(head -n 20 <<<"$leaked")"
fi

# ---- The Dockerfile: instructions, continuation lines joined, comments dropped ----

instructions=(); current=""
while IFS= read -r line || [ -n "$line" ]; do
  line=${line%$'\r'}
  [[ $line =~ ^[[:space:]]*# ]] && continue
  [[ -z $current && $line =~ ^[[:space:]]*$ ]] && continue
  if [[ $line =~ ^(.*)\\[[:space:]]*$ ]]; then current+="${BASH_REMATCH[1]}"; continue; fi
  instructions+=("$current$line"); current=""
done < "$dockerfile"
[ -z "$current" ] || instructions+=("$current")

# Stage of each instruction: stage_of[i] is the index of its FROM; stage names by index.
stage_of=(); stage_names=(); stage=-1
for i in "${!instructions[@]}"; do
  read -r keyword args <<<"${instructions[i]}"
  if [[ ${keyword^^} == FROM ]]; then
    stage=$((stage + 1))
    name=""
    [[ $args =~ [[:space:]][Aa][Ss][[:space:]]+([^[:space:]]+) ]] && name=${BASH_REMATCH[1]}
    stage_names[stage]=$name
  fi
  stage_of[i]=$stage
done
(( stage >= 0 )) || fail "no FROM in $dockerfile"
final_stage=$stage
build_index=-1
for s in "${!stage_names[@]}"; do [[ ${stage_names[s]} == "$build_stage" ]] && build_index=$s; done
(( build_index >= 0 )) || fail "no stage named '$build_stage' in $dockerfile"
(( build_index != final_stage )) || fail "the '$build_stage' stage is the final stage; this check expects a separate final stage"
(( final_stage == 1 && build_index == 0 )) ||
  fail "this check knows two stages (FROM ... AS $build_stage, then the image); teach it the others"

# ---- Replaying instructions ----

# Copies $1 (a path in the context, '.' for all of it) to $2 (absolute in the image root $3).
# A directory's contents go into $2; a file goes to $2 itself, or into it when $4 is 1.
copy_from_context() {
  local src=$1 dest=$2 root=$3 into=$4 f rel found=0
  for f in "${context_files[@]}"; do
    if [[ $src == . ]]; then rel=$f
    elif [[ $f == "$src/"* ]]; then rel=${f#"$src/"}
    else continue; fi
    mkdir -p "$(dirname "$root$dest/$rel")"
    cp -P --preserve=mode "$context/$f" "$root$dest/$rel"
    found=1
  done
  (( found )) && return 0
  if [[ -n ${in_context[$src]:-} ]]; then
    if (( into )) || [[ -d $root$dest ]]; then dest=$dest/${src##*/}; fi
    mkdir -p "$(dirname "$root$dest")"
    cp -P --preserve=mode "$context/$src" "$root$dest"
    return 0
  fi
  if [[ -d $context/$src ]] && ! ignored "$src"; then mkdir -p "$root$dest"; return 0; fi
  fail "COPY $src: not in the build context (missing, or kept out by .dockerignore)"
}

# COPY arguments $1 in a stage whose root is $2 and working directory $3.
copy() {
  local args=$1 root=$2 workdir=$3 from="" words=() w dest into src sources=() matches
  [[ $args == \[* ]] && fail "COPY in JSON form is not understood by this check: $args"
  read -ra words <<<"$args"
  while [[ ${words[0]:-} == --* ]]; do
    case ${words[0]} in
      --from=*) from=${words[0]#--from=} ;;
      --chown=*|--chmod=*|--link|--link=*) ;;
      *) fail "COPY option ${words[0]} is not understood by this check" ;;
    esac
    words=("${words[@]:1}")
  done
  (( ${#words[@]} >= 2 )) || fail "COPY needs a source and a destination: $args"
  dest=${words[-1]}
  into=0
  [[ $dest == */ || ${#words[@]} -gt 2 ]] && into=1
  [[ $dest == /* ]] || dest=$workdir/$dest
  dest=$(clean_path "$dest"); [[ $dest == / ]] && dest=""
  for src in "${words[@]:0:${#words[@]}-1}"; do
    if [[ -n $from ]]; then
      [[ $from == "$build_stage" ]] || fail "COPY --from=$from: this check replays --from=$build_stage only"
      [[ $src == *[*?[]* ]] && fail "COPY --from with a wildcard is not understood by this check: $src"
      src=$(clean_path "/$src")
      [[ -e $build_root$src ]] || fail "COPY --from=$from $src: the $build_stage stage made no $src"
      if [[ -d $build_root$src ]]; then
        mkdir -p "$root$dest"; cp -a "$build_root$src/." "$root$dest/"
      else
        if (( into )) || [[ -d $root$dest ]]; then w=$dest/${src##*/}; else w=$dest; fi
        mkdir -p "$(dirname "$root$w")"; cp -P --preserve=mode "$build_root$src" "$root$w"
      fi
      echo "   $src -> $dest"
      continue
    fi
    src=$(clean_path "$src"); src=${src#/}; [[ -z $src ]] && src=.
    if [[ $src == *[*?[]* ]]; then  # a wildcard: every file or directory it matches
      into=1
      local regex f
      regex=$(to_regex "$src")
      matches=$(for f in "${context_files[@]}"; do  # the file, or one of its directories
                  while :; do
                    if [[ $f =~ $regex ]]; then echo "$f"; fi
                    if [[ $f == */* ]]; then f=${f%/*}; else break; fi
                  done
                done | sort -u)
      [ -n "$matches" ] || fail "COPY $src: matches nothing in the build context"
      mapfile -t sources <<<"$matches"
    else
      sources=("$src")
    fi
    for w in "${sources[@]}"; do copy_from_context "$w" "$dest" "$root" "$into"; done
  done
  echo "   ($(find "$root${dest:-/}" -type f 2>/dev/null | wc -l) files now under ${dest:-/})"
}

# ENV arguments $1 added to the array named $2 (KEY=VALUE words).
add_env() {
  local args=$1 word words key value
  local -n into=$2
  case $args in *[\"\'\`\$\\]*) fail "ENV with quotes, \$ or \\ is not understood by this check: $args" ;; esac
  if [[ $args != *=* ]]; then
    read -r key value <<<"$args"; into+=("$key=$value"); return
  fi
  read -ra words <<<"$args"
  for word in "${words[@]}"; do
    [[ $word == *=* ]] || fail "ENV not understood: $args"
    into+=("$word")
  done
}

# JSON exec form ["a", "b"] into the array named $2 (plain strings only; shell form fails,
# since an image from `scratch` has no shell to run it).
exec_form() {
  local text=$1 item items
  local -n out=$2
  out=()
  [[ $text =~ ^\[(.*)\]$ ]] || fail "not in exec form ([\"...\"]) and there is no shell in the image: $text"
  IFS=, read -ra items <<<"${BASH_REMATCH[1]}"
  for item in "${items[@]}"; do
    item=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' <<<"$item")
    [[ $item =~ ^\"([^\"\\]*)\"$ ]] || fail "exec form element not understood: $item"
    out+=("${BASH_REMATCH[1]}")
  done
}

# RUN commands run without the caller's Cargo settings that would move the target directory
# or change the build (a `docker build` sees none of them).
clean_env=(-u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR -u CARGO_BUILD_TARGET -u RUSTFLAGS
           -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u RUSTC_WRAPPER)

# One RUN: `a && b && ...`, each a plain command. $2: the working directory; then KEY=VALUE.
cargo_env=()  # CARGO_NET_OFFLINE=true once a probe finds every crate in the local cache
cargo_probed=""
run() {
  local args=$1 workdir=$2 rest segment words shown host i stage_env=("${@:3}")
  case $args in
    \[*) fail "RUN in JSON form is not understood by this check: $args" ;;
    --*) fail "RUN options are not understood by this check: $args" ;;
    *[\"\'\`\$\|\;\<\>\(\)\{\}\*\?~#\\]*)
      fail "RUN with shell syntax beyond '&&' is not understood by this check: $args" ;;
  esac
  rest=$args
  while [ -n "$rest" ]; do
    segment=${rest%%&&*}
    if [[ $rest == *'&&'* ]]; then rest=${rest#*&&}; else rest=""; fi
    [[ $segment == *'&'* ]] && fail "RUN with a lone '&' is not understood by this check: $args"
    read -ra words <<<"$segment"
    (( ${#words[@]} )) || fail "an empty command in RUN: $args"
    case ${words[0]} in
      apk|apt-get|apt|dnf|yum)
        echo "   skipped (a package for the image's own toolchain): ${words[*]}"; continue ;;
    esac
    if [[ ${words[0]} == cargo && -z $cargo_probed ]]; then
      cargo_probed=1
      # A warm registry cache needs no network; a fresh machine fetches from crates.io.
      host=$(rustc -vV | sed -n 's/^host: //p')
      if (cd "$build_root$workdir" &&
          env "${clean_env[@]}" cargo fetch --locked --offline -q --target "$host") >/dev/null 2>&1; then
        cargo_env=(CARGO_NET_OFFLINE=true)
        echo "   (every crate is in the local registry cache: building offline)"
      fi
    fi
    shown="${words[*]}"
    echo "   \$ $shown"
    for i in "${!words[@]}"; do
      if [[ ${words[i]} == /* ]]; then words[i]=$build_root${words[i]}; fi
    done
    (cd "$build_root$workdir" &&
       timeout "$build_timeout" env "${clean_env[@]}" "${stage_env[@]}" "${cargo_env[@]}" "${words[@]}") ||
      fail "RUN ... $shown ... failed (exit $?) in the $build_stage stage"
  done
}

build_root=$work/build
image_root=$work/image
mkdir -p "$build_root" "$image_root"
build_workdir=/; build_env=()
image_workdir=/; image_env=(); entrypoint=(); command=(); healthcheck=(); stopsignal=TERM

for i in "${!instructions[@]}"; do
  read -r keyword args <<<"${instructions[i]}"
  keyword=${keyword^^}
  if (( stage_of[i] == build_index )); then
    case $keyword in
      FROM) echo "== stage $build_stage: ${instructions[i]}" ;;
      WORKDIR)
        [[ $args == /* ]] || args=$build_workdir/$args
        build_workdir=$(clean_path "$args"); mkdir -p "$build_root$build_workdir"
        echo "   WORKDIR $build_workdir" ;;
      ENV) add_env "$args" build_env; echo "   ENV $args" ;;
      COPY) echo "   COPY $args"; copy "$args" "$build_root" "$build_workdir" ;;
      RUN) run "$args" "$build_workdir" "${build_env[@]}" ;;
      LABEL) ;;
      *) fail "$keyword in the $build_stage stage is not understood by this check: ${instructions[i]}" ;;
    esac
  else
    case $keyword in
      FROM)
        echo "== final stage: ${instructions[i]}"
        [[ $args =~ ^scratch([[:space:]]|$) ]] ||
          fail "the final stage is not FROM scratch; this check knows only an image of its own copied files" ;;
      WORKDIR) [[ $args == /* ]] || args=$image_workdir/$args; image_workdir=$(clean_path "$args") ;;
      COPY) echo "   COPY $args"; copy "$args" "$image_root" "$image_workdir" ;;
      ENV) add_env "$args" image_env ;;
      ENTRYPOINT) exec_form "$args" entrypoint ;;
      CMD) exec_form "$args" command ;;
      HEALTHCHECK)
        if [[ $args =~ ^NONE$ ]]; then healthcheck=()
        else [[ $args =~ CMD[[:space:]]+(.*)$ ]] || fail "HEALTHCHECK not understood: $args"
             exec_form "${BASH_REMATCH[1]}" healthcheck; fi ;;
      STOPSIGNAL) stopsignal=${args#SIG} ;;
      USER|EXPOSE|LABEL) ;;
      *) fail "$keyword in the final stage is not understood by this check: ${instructions[i]}" ;;
    esac
  fi
done

# ---- Running the image's files ----

(( ${#entrypoint[@]} )) || fail "the final stage has no ENTRYPOINT"
# An absolute program path is looked up in the image root.
in_image() { local -n cmd=$1; [[ ${cmd[0]} == /* ]] && cmd[0]=$image_root${cmd[0]}; true; }
in_image entrypoint
[ -x "${entrypoint[0]}" ] || fail "ENTRYPOINT ${entrypoint[0]#"$image_root"} is not an executable file in the image"
echo "== image files: $(cd "$image_root" && find . -type f | sed 's#^\.##' | tr '\n' ' ')"

port=$((25000 + RANDOM % 7000))  # below the ephemeral range
container_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/
               "${image_env[@]}" BIND_IP=127.0.0.1 PORT=$port)

echo "== docker run IMAGE --version"
timeout 10 "${container_env[@]}" "${entrypoint[@]}" --version || fail "--version failed"

echo "== docker run -e BIND_IP=127.0.0.1 -e PORT=$port IMAGE"
log=$work/server.log
"${container_env[@]}" "${entrypoint[@]}" "${command[@]}" 2>"$log" &
server_pid=$!

health() (  # a subshell: a refused connection must not end the script
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
  response=$(timeout 5 cat <&3) || true
  grep -q '"status":"ok"' <<<"$response" && head -n 1 <<<"$response"
)
healthy=""
for _ in $(seq 100); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$log"; fail "the server exited at start"; }
  if health 2>/dev/null; then healthy=1; break; fi
  sleep 0.1
done
[ -n "$healthy" ] || { cat "$log"; fail "no /health answer on 127.0.0.1:$port within 10 s"; }

if (( ${#healthcheck[@]} )); then
  in_image healthcheck
  echo "== HEALTHCHECK CMD ${healthcheck[*]#"$image_root"}"
  timeout 10 "${container_env[@]}" "${healthcheck[@]}" || fail "the HEALTHCHECK command failed"
fi

echo "== docker stop (SIG$stopsignal)"
kill -s "$stopsignal" "$server_pid"
status=""
for _ in $(seq 100); do
  kill -0 "$server_pid" 2>/dev/null || { wait "$server_pid" && status=0 || status=$?; break; }
  sleep 0.1
done
[ -n "$status" ] || { cat "$log"; fail "still running 10 s after SIG$stopsignal"; }
server_pid=""
[ "$status" -eq 0 ] || { cat "$log"; fail "exit status $status after SIG$stopsignal"; }

echo "docker-check: OK (the build stage built from its COPY lines alone; the image's binary serves, is healthy and stops with 0)"
