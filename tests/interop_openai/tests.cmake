# The HTTP server driven by the official `openai` Python client (in the peer stack, .venv-peers,
# installed by scripts/setup): `lowrank serve` on a free loopback port with two adapters,
# completions and chat, streaming and not, logprobs and echo (against `lowrank logits`),
# /tokenize and /detokenize, models.list, adapter load/unload, SIGTERM. Skipped
# (exit 77) only when the peer stack is not installed.
add_test(NAME interop_openai.openai_client
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"skip: no python at $0\"; exit 77; fi"
          "${LOWRANK_PEER_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/openai_interop.py"
          "$<TARGET_FILE:lowrank_cli>" "${LOWRANK_TEST_FIXTURES}/hf/llama-tiny/model"
          "${LOWRANK_TEST_FIXTURES}/hf/bpe-gpt2style/tokenizer.json"
          "${LOWRANK_TEST_FIXTURES}/hf/llama-tiny/adapter-lora" "${CMAKE_CURRENT_BINARY_DIR}/interop_openai")
set_tests_properties(interop_openai.openai_client PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600
  ENVIRONMENT "LOWRANK_NUM_THREADS=2")
