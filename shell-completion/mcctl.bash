# bash completion for mcctl                                     -*- shell-script -*-
# SPDX-License-Identifier: LGPL-2.1-or-later

_mcctl() {
        local cur prev words cword
        _init_completion || return

        local commands="push run get list watch logs cancel nodes drain undrain content"
        local global="--help --version --config --url --token --control-ca --timeout --seeder"
        local cmd i
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                        --config|--url|--token|--control-ca|--timeout|--seeder|-u|-t) ((i++)) ;;
                        -*) ;;
                        *) cmd=${words[i]}; break ;;
                esac
        done

        if [[ -z $cmd ]]; then
                case $prev in
                        --config|--control-ca) _filedir; return ;;
                        --url|--token|--timeout|--seeder|-u|-t) return ;;
                esac
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "$global" -- "$cur"))
                else
                        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
                fi
                return
        fi

        local opts=""
        case $cmd in
                push)    opts="--file --wait --help"
                         [[ $prev == -f || $prev == --file ]] && { _filedir json; return; } ;;
                run)     opts="--image --node --cpus --memory --timeout --input --env --label --id --max-attempts --runtime --wait --help" ;;
                get)     opts="--output --help" ;;
                list)    opts="--status --label --limit --all --output --help"
                         [[ $prev == --status ]] && { COMPREPLY=($(compgen -W "queued leased running succeeded failed timed_out cancelled" -- "$cur")); return; } ;;
                logs)    opts="--follow --help" ;;
                nodes)   opts="--output --help" ;;
                content) [[ $prev == content ]] && { COMPREPLY=($(compgen -W "add" -- "$cur")); return; }
                         [[ $prev == add ]] && { _filedir; return; } ;;
                *)       opts="--help" ;;
        esac
        [[ $prev == -o || $prev == --output ]] && { COMPREPLY=($(compgen -W "table json" -- "$cur")); return; }
        [[ $cur == -* ]] && COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}

complete -F _mcctl mcctl
