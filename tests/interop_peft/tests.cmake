# Interop with PEFT and transformers (the peer stack in .venv-peers, installed by scripts/setup):
# adapters written by lowrank load in PEFT with the same logits, and PEFT's adapters (LoRA,
# rsLoRA with patterns, DoRA, modules_to_save, PiSSA before and after conversion) load in lowrank
# with PEFT's logits. Skipped (exit 77) only when the peer stack is not installed.
add_test(NAME interop_peft.peft_adapters
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"skip: no python at $0\"; exit 77; fi"
          "${LOWRANK_PEER_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/peft_interop.py"
          "$<TARGET_FILE:lowrank_cli>" "${LOWRANK_TEST_FIXTURES}/hf/llama-tiny/model"
          "${LOWRANK_TEST_FIXTURES}/hf/bpe-gpt2style/tokenizer.json"
          "${LOWRANK_TEST_FIXTURES}/tokenizers/corpus.txt" "${CMAKE_CURRENT_BINARY_DIR}/interop_peft")
set_tests_properties(interop_peft.peft_adapters PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900)
