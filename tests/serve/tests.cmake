# http_server_test.cpp drives the server through httplib's client: it is compiled with
# cpp-httplib's pkg-config flags, which must match the installed library, and therefore without
# the shared precompiled header (see src/lowrank/CMakeLists.txt).
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED cpp-httplib)
set_source_files_properties("${CMAKE_CURRENT_LIST_DIR}/http_server_test.cpp" PROPERTIES
  COMPILE_OPTIONS "${HTTPLIB_CFLAGS_OTHER}" INCLUDE_DIRECTORIES "${HTTPLIB_INCLUDE_DIRS}"
  SKIP_PRECOMPILE_HEADERS ON)
target_link_libraries(serve_tests PRIVATE ${HTTPLIB_LINK_LIBRARIES})
