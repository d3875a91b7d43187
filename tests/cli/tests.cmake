# The CLI tests drive the built binary.
add_dependencies(cli_tests lowrank_cli)
# generate_serve_test.cpp talks to `lowrank serve` through httplib's client.
lowrank_test_uses_httplib(cli_tests "${CMAKE_CURRENT_LIST_DIR}/generate_serve_test.cpp")
