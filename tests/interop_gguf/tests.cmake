# GGUF export against llama.cpp's own tools (docs/gguf.md). Both scripts run with the peer stack's
# Python and skip (exit 77, with the reason) when what they need is absent:
# - gguf_package: the `gguf` package (gguf-py, pinned in .venv-peers) reads every exported file as
#   `lowrank inspect` does, and each tensor's bytes equal gguf.quants.quantize of the HF tensor in
#   llama.cpp's layout;
# - llamacpp_greedy: llama.cpp (llama-cpp-python over the library scripts/setup-llamacpp --bindings
#   builds; never built here) decodes the exported tiny Llama, with and without its LoRA, to the same
#   64 greedy tokens as `lowrank generate`.
foreach(check IN ITEMS gguf_package llamacpp_greedy)
  if(check STREQUAL "gguf_package")
    set(script "${CMAKE_CURRENT_LIST_DIR}/gguf_interop.py")
    set(extra "")
  else()
    set(script "${CMAKE_CURRENT_LIST_DIR}/llamacpp_greedy.py")
    set(extra "${PROJECT_SOURCE_DIR}/scripts/setup-llamacpp")
  endif()
  add_test(NAME interop_gguf.${check}
    COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"SKIP: no python at $0\"; exit 77; fi"
            "${LOWRANK_PEER_PYTHON}" "${script}" "$<TARGET_FILE:lowrank_cli>" "${LOWRANK_TEST_FIXTURES}"
            "${CMAKE_CURRENT_BINARY_DIR}/interop_gguf_${check}" ${extra})
  set_tests_properties(interop_gguf.${check} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
endforeach()
