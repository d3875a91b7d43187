# http_server_test.cpp drives the server through httplib's client.
lowrank_test_uses_httplib(serve_tests "${CMAKE_CURRENT_LIST_DIR}/http_server_test.cpp")
lowrank_test_uses_httplib(serve_tests "${CMAKE_CURRENT_LIST_DIR}/playground_test.cpp")
