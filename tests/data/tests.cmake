# tokenize_cli_test.cpp drives the built `lowrank` binary.
add_dependencies(data_tests lowrank_cli)
