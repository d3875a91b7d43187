# The playground (GET / of `lowrank serve`) and the run reports (`lowrank report`, GET /runs) in a
# real browser: headless Chromium from Debian (chromium, chromium-driver; scripts/setup installs
# them for the full test run) driven by Selenium from the peer stack (.venv-peers). Screenshots go
# to the build tree (build/tests/browser/out). Skipped (exit 77, with the reason) when the peer
# stack's Python, Selenium, Chromium or chromedriver is missing.
add_test(NAME browser.playground_and_report
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"skip: no python at $0\"; exit 77; fi"
          "${LOWRANK_PEER_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/browser_test.py"
          "$<TARGET_FILE:lowrank_cli>" "${LOWRANK_TEST_FIXTURES}/hf/llama-tiny/model"
          "${LOWRANK_TEST_FIXTURES}/hf/bpe-gpt2style/tokenizer.json"
          "${LOWRANK_TEST_FIXTURES}/hf/llama-tiny/adapter-lora" "${CMAKE_CURRENT_BINARY_DIR}/browser")
set_tests_properties(browser.playground_and_report PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180
  ENVIRONMENT "LOWRANK_NUM_THREADS=2")
