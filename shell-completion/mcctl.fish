# fish completion for mcctl
# SPDX-License-Identifier: LGPL-2.1-or-later

set -l commands push run get list watch logs cancel nodes drain undrain content
complete -c mcctl -f
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -s h -l help -d 'Show help'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -l version -d 'Show the version'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -l config -r -F -d 'Configuration file'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -s u -l url -x -d "The control's URL"
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -s t -l token -x -d 'A user token'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -l control-ca -r -F -d "CA of the control's certificate"
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -l timeout -x -d 'Seconds one request may take'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -l seeder -x -d 'The mc-seeder program'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a push -d 'Push the task in a JSON file'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a run -d 'Push a task that runs a command'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a get -d 'Show a task'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a list -d 'List tasks'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a watch -d 'Follow a task until it ends'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a logs -d "Print a task's output"
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a cancel -d 'Cancel a task'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a nodes -d 'List the nodes'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a drain -d 'Give a node no new tasks'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a undrain -d 'Give a node tasks again'
complete -c mcctl -n "not __fish_seen_subcommand_from $commands" -a content -d 'Store a file as a content'
complete -c mcctl -n "__fish_seen_subcommand_from push" -s f -l file -r -F -d 'Task file'
complete -c mcctl -n "__fish_seen_subcommand_from push run" -s w -l wait -d 'Follow it until it ends'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s i -l image -x -d 'Image'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s n -l node -x -d 'Only this node'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s c -l cpus -x -d 'CPUs'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s m -l memory -x -d 'Memory (256M, 1G)'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s t -l timeout -x -d 'Seconds it may run'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s I -l input -x -d 'CONTENT-ID:PATH'
complete -c mcctl -n "__fish_seen_subcommand_from run" -s e -l env -x -d 'NAME=VALUE'
complete -c mcctl -n "__fish_seen_subcommand_from run list" -s l -l label -x -d 'KEY=VALUE'
complete -c mcctl -n "__fish_seen_subcommand_from run" -l id -x -d 'Task id'
complete -c mcctl -n "__fish_seen_subcommand_from run" -l max-attempts -x -d 'Leases it may be given'
complete -c mcctl -n "__fish_seen_subcommand_from run" -l runtime -x -d 'OCI runtime'
complete -c mcctl -n "__fish_seen_subcommand_from list" -l status -x -a 'queued leased running succeeded failed timed_out cancelled'
complete -c mcctl -n "__fish_seen_subcommand_from list" -l limit -x -d '1..1000'
complete -c mcctl -n "__fish_seen_subcommand_from list" -l all -d 'Every page'
complete -c mcctl -n "__fish_seen_subcommand_from get list nodes" -s o -l output -x -a 'table json'
complete -c mcctl -n "__fish_seen_subcommand_from logs" -s f -l follow -d 'Until it ends'
complete -c mcctl -n "__fish_seen_subcommand_from content; and not __fish_seen_subcommand_from add" -a add -d 'Store FILE'
complete -c mcctl -n "__fish_seen_subcommand_from add" -r -F
