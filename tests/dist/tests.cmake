# launch_test.cpp drives the built `lowrank` binary (--nproc, torchrun's variables, faults).
add_dependencies(dist_tests lowrank_cli)
# torchrun --no-python from the peer stack, when it is installed (skipped otherwise).
add_test(NAME dist.torchrun
         COMMAND "${CMAKE_CURRENT_LIST_DIR}/torchrun_test.sh" "${LOWRANK_PEER_PYTHON}" "$<TARGET_FILE:lowrank_cli>")
set_tests_properties(dist.torchrun PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180
  ENVIRONMENT "LOWRANK_NUM_THREADS=2")
# Every data-parallel test starts ranks that wait on each other: each gets a time limit of its own.
# The discovered tests exist only once the discovery script has run (PRE_TEST), so the limits are
# set by a script included after it.
file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/dist_timeouts.cmake"
  "set_tests_properties(dist.LaunchTest.NprocTwoAndTorchrunVariablesGiveTheOneProcessRun\n"
  "  dist.LaunchTest.AKilledRankStopsTheOtherAndTheCheckpointResumes\n"
  "  dist.LaunchTest.BadInputsFailWithTheirMessage PROPERTIES TIMEOUT 180)\n"
  "set_tests_properties(dist.DataParallelTest.ReducedGradientsEqualTheOneProcessBatch\n"
  "  dist.DataParallelTest.CheckpointsMoveBetweenWorldSizes\n"
  "  dist.DataParallelTest.MismatchedRunsAreRefusedOnEveryRank PROPERTIES TIMEOUT 120)\n")
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${CMAKE_CURRENT_BINARY_DIR}/dist_timeouts.cmake")
