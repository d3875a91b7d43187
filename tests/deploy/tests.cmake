# The two-replica recipe of deploy/ (deploy/run-replicas: two `lowrank serve` behind HAProxy),
# driven by the official `openai` Python client: sticky adapters, spreading without the header,
# streaming through the proxy, a short locust load run, failover when a replica goes down.
# Skipped (exit 77) when the peer stack (.venv-peers) or haproxy is not installed (scripts/setup
# installs both with the full test run).
add_test(NAME deploy.replicas
  COMMAND sh -c "if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; else echo \"skip: no python at $0\"; exit 77; fi"
          "${LOWRANK_PEER_PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/replicas_test.py"
          "$<TARGET_FILE:lowrank_cli>" "${PROJECT_SOURCE_DIR}")
set_tests_properties(deploy.replicas PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180
  ENVIRONMENT "LOWRANK_NUM_THREADS=2;LOWRANK_PEER_PYTHON=${LOWRANK_PEER_PYTHON}")
