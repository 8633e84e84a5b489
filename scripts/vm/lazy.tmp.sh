#!/bin/sh
TCPTOP_TEST_HOOKS=fentry /work/main/target/debug/deps/kernel-2552570576cf6468 --test-threads=1 2>&1 | grep -E "^test |test result|panicked" | grep -v " ok$"
TCPTOP_TEST_HOOKS=kprobe /work/main/target/debug/deps/kernel-2552570576cf6468 --test-threads=1 --exact call_in_flight_at_start_is_counted idle_existing_connection_is_live adopted_with_bytes_queued_is_exact 2>&1 | grep -E "^test |test result|panicked"
