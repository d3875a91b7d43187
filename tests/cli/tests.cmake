# The CLI tests drive the built binary.
add_dependencies(cli_tests lowrank_cli)
