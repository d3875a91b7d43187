# launch_test.cpp drives the built `lowrank` binary (--nproc, torchrun's variables, faults).
add_dependencies(dist_tests lowrank_cli)
# torchrun --no-python from the peer stack, when it is installed (skipped otherwise).
add_test(NAME dist.torchrun
         COMMAND "${CMAKE_CURRENT_LIST_DIR}/torchrun_test.sh" "${LOWRANK_PEER_PYTHON}" "$<TARGET_FILE:lowrank_cli>")
set_tests_properties(dist.torchrun PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180
  ENVIRONMENT "LOWRANK_NUM_THREADS=2")
# Each gtest-discovered dist test has a 240 s limit (tests/CMakeLists.txt).
