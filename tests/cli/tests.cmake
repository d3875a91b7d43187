# The CLI tests drive the built binary.
add_dependencies(cli_tests lowrank_cli)
# generate_serve_test.cpp talks to `lowrank serve` through httplib's client.
lowrank_test_uses_httplib(cli_tests "${CMAKE_CURRENT_LIST_DIR}/generate_serve_test.cpp")
# serve_shutdown_test.cpp drives `lowrank serve` through httplib's client and signals it.
lowrank_test_uses_httplib(cli_tests "${CMAKE_CURRENT_LIST_DIR}/serve_shutdown_test.cpp")
# Process tests that wait on a child get a CTest time limit of their own. The discovered tests
# exist only once the discovery script has run (PRE_TEST), so the limit is set by a script
# included after it.
file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/cli_process_timeouts.cmake"
  "set_tests_properties(cli.ServeShutdownTest.SigtermDrainsInFlightRequestsAndRefusesNewOnes\n"
  "  cli.ServeShutdownTest.SecondSigtermExitsAtOnce PROPERTIES TIMEOUT 60)\n")
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${CMAKE_CURRENT_BINARY_DIR}/cli_process_timeouts.cmake")
