"""Proof that our pg-boss client and real pg-boss 12.38 are interchangeable on one queue.

Map of the equivalence scenarios of the shared contract (§8) to modules; "both ways" means
the scenario runs once with our client acting and pg-boss observing and once the reverse
(``actor``/``observer``), and/or as a twin run compared row by row (``twin``):

====  ==========================================  ===================  ==========================
#     scenario                                    module               how
====  ==========================================  ===================  ==========================
1     every column of a sent/inserted job         test_send            twin; pg-boss API reads ours
2     per-job dead letter overrides the queue's   test_send, _settle   twin
3     delayed jobs (seconds, date time)           test_lifecycle       both ways
4     priority order                              test_lifecycle       both ways; min/maxPriority
                                                                       one way (Node-only option)
5     batch fetch                                 test_settle          twin, both ways
6     outputs of complete and fail                test_settle          twin; Python exception shape
7-10  retries: fixed delay, backoff, cap, manual  test_settle          twin, both ways
11    dead-letter copies                          test_settle          twin, both ways
12    expiry, heartbeat loss, touch               test_settle          twin, both ways
13    queue policies, job_common and partitions   test_policies        both ways, step by step
14    key_strict_fifo                             test_policies        both ways
15    throttle and debounce                       test_lifecycle       twin, both ways
16    flows                                       test_flows           one way: our client creates
                                                                       no flows and resolves none;
                                                                       we work pg-boss's flows
17    cancel and resume                           test_lifecycle       twin, both ways
18    retention deletion                          test_lifecycle       one way: only Node sweeps
19    group concurrency                           test_groups          both ways, mixed race
20    NOTIFY wakes a LISTENing Node worker        test_notify          our insert → Node worker
21    mixed drain race                            test_race            5,000 jobs, 3 workers
22    late settle after expiry                    test_settle          both ways
====  ==========================================  ===================  ==========================

Plus: concurrent settles of the same claims by both clients (test_race) and pg-boss's own
schema check after our client used every verb (test_doctor).
"""
