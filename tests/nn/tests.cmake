#The nn tests drive the built binary(lowrank logits / generate end to end).
add_dependencies(nn_tests lowrank_cli)
