"""AWS Lambda's documented limits and platform facts, defined once.

The cost planner, the local stack (which sizes its sandboxes as Lambda does) and the stack settings
read them from here; each cites the AWS page that states it. Check them when AWS changes a quota.
"""

# https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html: CPU is allocated in
# proportion to memory; "at 1,769 MB, a function has the equivalent of one vCPU".
MB_PER_VCPU = 1769
# Same page: memory is 128 MB to 10,240 MB, in 1 MB steps; 10,240 MB gets up to 6 vCPUs.
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10240
MAX_VCPUS = 6
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html: "New AWS accounts have
# reduced concurrency and memory quotas"; the memory quota such accounts report refusing above is
# 3,008 MB (the pre-2020 maximum). No API reports it, so the stack's defaults stay within it.
NEW_ACCOUNT_MEMORY_MB = 3008

# https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html: at most 900 s (15 min).
MAX_TIMEOUT_S = 900

# https://docs.aws.amazon.com/lambda/latest/dg/configuration-ephemeral-storage.html: /tmp is
# 512 MB to 10,240 MB.
MIN_EPHEMERAL_MB = 512
MAX_EPHEMERAL_MB = 10240

# https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html: Lambda keeps 100
# units of the account's concurrency unreserved, so reservations add up to the limit minus 100;
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html: the default limit is
# 1,000 per Region.
UNRESERVED_CONCURRENCY = 100
DEFAULT_ACCOUNT_CONCURRENCY = 1000

# https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html: a failed
# asynchronous invocation is retried twice (0 to 2 configurable), about 1 and then 2 minutes later.
ASYNC_RETRIES = 2
ASYNC_RETRY_DELAYS_S = (60.0, 120.0)

# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html: the Init phase
# (imports, module-level code) is limited to 10 s on on-demand functions; one that does not finish
# in time is run again at the first invocation, under the function's configured timeout.
INIT_TIMEOUT_S = 10.0
# Same page: the 10 s limit does not apply to provisioned concurrency, whose init may run for the
# larger of 130 s and the function's timeout.
PROVISIONED_INIT_MIN_S = 130.0

# https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html: an asynchronous
# event that is throttled (429) goes back to the queue and is tried again for up to 6 hours, "the
# retry interval increases exponentially from 1 second after the first attempt to a maximum of 5
# minutes"; an event older than that is discarded (to the dead-letter queue, where there is one).
ASYNC_THROTTLE_RETRY_FIRST_S = 1.0
ASYNC_THROTTLE_RETRY_MAX_S = 300.0
ASYNC_MAX_EVENT_AGE_S = 6 * 3600.0

# https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html: "For synchronous invocations, the
# maximum payload size is 6 MB. For asynchronous invocations, the maximum payload size is 1 MB";
# a larger request is refused with RequestTooLargeException (413).
SYNC_PAYLOAD_MAX_BYTES = 6 * 1024 * 1024
ASYNC_PAYLOAD_MAX_BYTES = 1024 * 1024
