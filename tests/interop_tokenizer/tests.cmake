# Interop with Hugging Face `tokenizers` (Python, in the project's venv): tokenizers trained by
# `lowrank tokenize --train` must load in `tokenizers` and encode and decode as it does, and
# `tokenizers`' own trainer must learn the same merges. Skipped (exit 77) when the interpreter or
# the module is missing.
add_test(NAME interop_tokenizer.hf_tokenizers
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"skip: no python at $0\"; exit 77; fi"
          "${LOWRANK_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/hf_interop.py"
          "$<TARGET_FILE:lowrank_cli>" "${LOWRANK_TEST_FIXTURES}/tokenizers/corpus.txt"
          "${CMAKE_CURRENT_BINARY_DIR}/interop_tokenizer")
set_tests_properties(interop_tokenizer.hf_tokenizers PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
