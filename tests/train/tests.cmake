# pretrain_cli_test.cpp drives the built `lowrank` binary (pretrain, eval, a killed run).
add_dependencies(train_tests lowrank_cli)
