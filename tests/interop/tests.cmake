# Python interop: safetensors_copy (read with lowrank, write with lowrank) and a script that checks
# its output is byte-identical to files written by the Python `safetensors` library. The test is
# skipped (CTest SKIP_RETURN_CODE 77) when ${LOWRANK_PYTHON} or its numpy/safetensors is missing.
add_executable(safetensors_copy "${CMAKE_CURRENT_LIST_DIR}/safetensors_copy.cpp")
target_link_libraries(safetensors_copy PRIVATE lowrank)
lowrank_use_pch(safetensors_copy)

add_test(NAME interop.safetensors_python
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; fi; echo \"SKIP: no Python interpreter at $0 (set LOWRANK_PYTHON)\"; exit 77"
          "${LOWRANK_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/safetensors_python.py" "$<TARGET_FILE:safetensors_copy>")
set_tests_properties(interop.safetensors_python PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
