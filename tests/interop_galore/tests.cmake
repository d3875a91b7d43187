# GaLore against the authors' package: galore_driver runs lowrank's optimizer over weights and
# gradients from a safetensors file; galore_interop.py (peer stack in .venv-peers) writes them,
# runs galore-torch's GaLoreAdamW on the same inputs and compares the weights after every step.
# Skipped (exit 77) when the peer python or galore-torch is not installed.
add_executable(galore_driver "${CMAKE_CURRENT_LIST_DIR}/galore_driver.cpp")
target_link_libraries(galore_driver PRIVATE lowrank)
lowrank_use_pch(galore_driver)

add_test(NAME interop_galore.galore_adamw
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"skip: no python at $0\"; exit 77; fi"
          "${LOWRANK_PEER_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/galore_interop.py"
          "$<TARGET_FILE:galore_driver>" "${CMAKE_CURRENT_BINARY_DIR}/interop_galore")
set_tests_properties(interop_galore.galore_adamw PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
