# kernel_cli_test.cpp drives the built `lowrank kernel` verb.
add_dependencies(kernel_methods_tests lowrank_cli)
