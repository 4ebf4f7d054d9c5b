"""The headline rows of bench/results.md and the README: which figure, beside which baseline, named how.

Data only, kept apart from the renderer (report.py) so the list reads as one table and a test
(tests/test_bench_report.py) can check that every path below names a key its benchmark really
prints. Rules the rows follow:

- `figure` and `baseline` are dotted paths into the benchmark's JSON (`by_size.16MB.ours_ms`; a
  list element is `phases.0.cases`). A baseline is always a figure measured in the same run, never
  a target: targets go in `target`, as text.
- `what`, `baseline_is` and `target` may quote figures of the same benchmark as `{path}` or
  `{path:format}` (`{size_mb}`, `{targets_s.file:g}`), so a row names what this run measured (the
  object size, the settings, the fastest peer) instead of what an earlier run did.
- A figure the run did not produce renders as "n/a": a benchmark failed, was skipped, or renamed
  its key (the test catches the last).
"""

from __future__ import annotations

from typing import NamedTuple


class Row(NamedTuple):
    what: str
    bench: str
    figure: str
    baseline: str | None = None
    unit: str = ""
    baseline_is: str = ""
    target: str = ""


HEADLINES: list[Row] = [
    # --- queue mechanics: our worker vs the kiosk's polling loop, then vs the peers
    Row("Idle pickup latency p50 (push -> job starts)", "queue", "pickup_p50_ms", "baseline_pickup_p50_ms", "ms",
        "kiosk-style polling loop (LLEN/RPOPLPUSH, sleeps {kiosk_empty_queue_timeout_s:g} s when empty)",
        "<= {targets.pickup_p50_ms}"),
    Row("Idle pickup latency p99", "queue", "pickup_p99_ms", "baseline_pickup_p99_ms", "ms", "same polling loop",
        "<= {targets.pickup_p99_ms}"),
    Row("Null-consumer throughput, one worker", "queue", "throughput_jobs_per_s", "baseline_throughput_jobs_per_s",
        "jobs/s", "polling loop without claim tokens, fencing or Lua (unsafe under failure)",
        ">= {targets.throughput_jobs_per_s}"),
    Row("Worker CPU per null job, one worker ({jobs} pre-queued jobs, every thread)", "null_worker",
        "worker_cpu_us_per_job", "broker_loop_cpu_us_per_job", "µs CPU",
        "the broker's claim + finish called in a tight loop, no worker around it, same run"),
    Row("Null jobs/s, one worker, pre-queued (first started_at -> last finished_at)", "null_worker",
        "null_jobs_per_s", "broker_loop.null_jobs_per_s", "jobs/s", "the broker's tight loop, same run"),
    Row("Null jobs/s, one worker, vs the fastest peer", "peers", "ours_null_jobs_per_s", "best_peer_null_jobs_per_s",
        "jobs/s", "fastest of RQ, Celery, Dramatiq, arq, taskiq on the same Redis: {best_peer_throughput}",
        ">= 3x baseline"),
    Row("Idle pickup p50 vs the fastest peer", "peers", "ours_pickup_p50_ms", "best_peer_pickup_p50_ms", "ms",
        "fastest peer's p50, same Redis: {best_peer_pickup}"),
    Row("Redis server CPU per null job (INFO cpu, enqueue + run) vs the cheapest peer", "peers",
        "ours_redis_cpu_us_per_job", "cheapest_peer_redis_cpu_us_per_job", "µs",
        "cheapest peer, same Redis: {cheapest_peer_redis_cpu}", "<= 70"),
    Row("SIGKILLed worker's job re-run (kill -> second start), ours with HEARTBEAT_INTERVAL "
        "{ours_settings.HEARTBEAT_INTERVAL:g} s / HEARTBEAT_TTL {ours_settings.HEARTBEAT_TTL:g} s", "peers",
        "systems.ours.sigkill_rerun_s", "fastest_peer_rerun_s", "s",
        "fastest peer ({fastest_peer_rerun}), its redelivery setting turned down to {redelivery_setting_s} s; "
        "n/a: none within {kill_cap_s:g} s", "<= 10"),
    Row("Silent worker's job back on its queue, HEARTBEAT_INTERVAL {defaults.heartbeat_interval:g} s / TTL "
        "{defaults.heartbeat_ttl:g} s (defaults), {at_defaults.workers} workers beating", "liveness",
        "at_defaults.rerun_after_silence_seconds.max", None, "s", "", "<= 10"),
    Row("Redis CPU for heartbeats + reaper, {at_defaults.workers} workers, defaults", "liveness",
        "at_defaults.redis_cpu_percent_of_one_core", "at_longest_interval.redis_cpu_percent_of_one_core",
        "% of a core", "HEARTBEAT_INTERVAL {at_longest_interval.heartbeat_interval:g} s / TTL "
        "{at_longest_interval.heartbeat_ttl:g} s, same run"),
    # --- tensor codec and gRPC
    Row("Tensor encode+decode, 16 MB float32, vs the kiosk's encoding", "codec", "ours_total_ms",
        "list_float_val_total_ms", "ms", "repeated float_val from a Python list"),
    Row("Tensor encode+decode, 16 MB float32, vs protobuf", "codec", "ours_total_ms", "protobuf_content_total_ms",
        "ms", "protobuf's serializer with tensor_content"),
    Row("Tensor encode+decode, 16 MB float32, vs one fresh copy", "codec", "ours_total_ms", "copy_ms", "ms",
        "one tobytes() of the same array (fresh pages)"),
    Row("Codec encode+decode vs a warm memcpy, 1 MB", "codec", "by_size.1MB.ours_ms", "by_size.1MB.warm_memcpy_ms",
        "ms", "np.copyto into a buffer written once before", "<= {target_ours_vs_warm_memcpy:g}x baseline"),
    Row("Codec encode+decode vs a warm memcpy, 16 MB", "codec", "by_size.16MB.ours_ms",
        "by_size.16MB.warm_memcpy_ms", "ms", "np.copyto into a buffer written once before",
        "<= {target_ours_vs_warm_memcpy:g}x baseline"),
    Row("Codec encode+decode vs a warm memcpy, 64 MB", "codec", "by_size.64MB.ours_ms",
        "by_size.64MB.warm_memcpy_ms", "ms", "np.copyto into a buffer written once before",
        "<= {target_ours_vs_warm_memcpy:g}x baseline"),
    Row("Predict round trip, 16 MB, loopback gRPC", "codec", "round_trip_16mb_ms", "grpc_bytes_echo_16mb_ms", "ms",
        "bare grpcio bytes echo of the same payload, same server process",
        "<= {target_round_trip_vs_grpc_echo:g}x baseline"),
    # --- feeding one (simulated, per-pixel cost) GPU
    Row("GPU busy at per-pixel cost, 256x256 float32 tiles, one worker, shipped malloc setting ({shipped_malloc}) + "
        "buffer pool", "gpu", "busy_256_float32", "busy_256_float32_baseline", "fraction",
        "default malloc, no buffer pool, same run", ">= {target_busy:g}"),
    Row("GPU busy at per-pixel cost, 512x512 float32 tiles, one worker, same setting", "gpu", "busy_512_float32",
        "busy_512_float32_baseline", "fraction", "default malloc, no buffer pool, same run"),
    Row("GPU busy at per-pixel cost, 256x256, model declares uint16 inputs", "gpu", "busy_256_uint16",
        "busy_256_float32", "fraction", "float32 inputs, same settings"),
    Row("Images/s into one GPU, 2048x2048 in 256x256 float32 tiles, one worker", "gpu", "images_per_s_256_float32",
        "images_per_s_256_float32_baseline", "images/s", "default malloc, no buffer pool, same run"),
    Row("GPU busy at per-pixel cost, 256x256 float32 tiles, two workers, shipped malloc setting", "gpu",
        "busy_256_float32_two_workers", "busy_256_float32", "fraction", "one worker, same settings, same run",
        ">= {target_busy:g}"),
    Row("Worker processes per GPU for busy >= 0.9 (256x256), estimated as ceil(0.9 / one worker's busy); the two-worker row checks it",
        "gpu", "workers_per_gpu_256", None, "processes"),
    # --- CPU of the pipelines users run (consumer_cpu: whole jobs; deepcell: the library path)
    Row("Segmentation job CPU per MP outside the deep watershed ({deepcell.image}, SimulatedGPU server)",
        "consumer_cpu", "deepcell.segmentation.cpu_ms_per_mp_outside_watershed",
        "deepcell.floors_cpu_ms_per_mp.memcpy_image", "ms CPU/MP", "one memcpy of the image, same run",
        "<= {deepcell.segmentation.target_outside_watershed_ms_per_mp:g}"),
    Row("Mesmer job CPU per MP outside the deep watershed ({deepcell.image}, 2 channels)", "consumer_cpu",
        "deepcell.mesmer.cpu_ms_per_mp_outside_watershed", "deepcell.floors_cpu_ms_per_mp.memcpy_image",
        "ms CPU/MP", "one memcpy of the image, same run",
        "<= {deepcell.mesmer.target_outside_watershed_ms_per_mp:g}"),
    Row("Segmentation job CPU per MP, whole job incl. deep watershed", "consumer_cpu",
        "deepcell.segmentation.cpu_ms_per_mp_median", None, "ms CPU/MP"),
    Row("Mesmer job CPU per MP, whole job incl. deep watershed", "consumer_cpu", "deepcell.mesmer.cpu_ms_per_mp_median",
        None, "ms CPU/MP"),
    Row("Deep watershed (h_maxima markers) CPU per MP vs the scikit-image path", "deepcell",
        "deep_watershed_nuclear_h_maxima.ours_ms_per_mp", "deep_watershed_nuclear_h_maxima.reference_ms_per_mp",
        "ms CPU/MP", "deepcell-toolbox's way (skimage h_maxima + watershed), same heads, same run",
        "<= {target_ratio_h_maxima_path:g}x baseline"),
    Row("Deep watershed (h_maxima markers): labels identical to the scikit-image path", "deepcell",
        "deep_watershed_nuclear_h_maxima.identical", None, "", "", "yes"),
    Row("Deep watershed (peak_local_max markers) CPU per MP vs the scikit-image path", "deepcell",
        "deep_watershed_nuclear_peak_local_max.ours_ms_per_mp",
        "deep_watershed_nuclear_peak_local_max.reference_ms_per_mp", "ms CPU/MP",
        "skimage peak_local_max + watershed, same heads, same run"),
    Row("Deep watershed, Mesmer whole-cell, CPU per MP vs the scikit-image path", "deepcell",
        "deep_watershed_mesmer_whole_cell.ours_ms_per_mp", "deep_watershed_mesmer_whole_cell.reference_ms_per_mp",
        "ms CPU/MP", "same heads, same run"),
    Row("Threshold-path job CPU per image ({image}; Identity model, no deep watershed)", "consumer_cpu",
        "cpu_ms_per_image_median", None, "ms CPU", "", "<= {target_cpu_ms:g}"),
    Row("Same job, the worker's main thread only", "consumer_cpu", "main_thread_cpu_ms_per_image_median",
        "cpu_ms_per_image_median", "ms CPU", "whole process incl. gRPC threads"),
    Row("Polaris spot postprocessing CPU per MP (preprocess, points, CSV, overlay)", "spots",
        "cpu_ms_per_megapixel_total", "baseline_cpu_ms_per_megapixel.ndimage_label", "ms CPU/MP",
        "one ndimage.label of the thresholded P(spot), same run"),
    Row("Polaris job CPU per MP, spots only (whole consumer)", "spots", "consumer_cpu_ms_per_megapixel.none", None,
        "ms CPU/MP"),
    Row("Tracking features CPU per frame", "tracking", "cpu_ms_per_frame.features",
        "baseline_cpu_ms_per_frame.ndimage_label", "ms CPU", "one ndimage.label of the frame, same run"),
    Row("Tracking assignment CPU per frame", "tracking", "cpu_ms_per_frame.assignment",
        "baseline_cpu_ms_per_frame.linear_sum_assignment", "ms CPU",
        "one linear_sum_assignment of a matrix that size, same run"),
    Row("Caliban job CPU per frame (segment + track, whole consumer)", "tracking",
        "consumer_cpu_ms_per_frame.tiff_input", None, "ms CPU"),
    # --- start-up, storage, fan-in
    Row("Time to first result, file:// bucket, demo-model segmentation job (threshold path; process start -> "
        "first job done)", "coldstart", "file.first_result_s",
        "baseline_python.wall_s", "s", "bare `python -c pass` start, same run", "<= {targets_s.file:g}"),
    Row("Time to first result, file:// bucket, kiosk segmentation job (NUCLEAR_MODEL, deep watershed)", "coldstart",
        "file_deepcell.first_result_s", "baseline_python.wall_s", "s", "bare `python -c pass` start, same run",
        "<= {targets_s.file:g}"),
    Row("Worker idle RSS after a kiosk segmentation job (file://, scikit-image loaded)", "coldstart",
        "file_deepcell.idle_rss_mb", "baseline_python.rss_mb", "MB", "bare interpreter, same run",
        "<= {target_idle_rss_mb}"),
    Row("Worker idle RSS after a kiosk segmentation job, shipped malloc settings ({shipped_malloc})", "coldstart",
        "file_deepcell_shipped_malloc.idle_rss_mb", "file_deepcell_shipped_malloc_no_trim.idle_rss_mb", "MB",
        "same job and settings, IDLE_MALLOC_TRIM=false (freed heap kept when idle), same run",
        "<= {target_idle_rss_mb}"),
    Row("Time to first result, s3:// bucket (moto)", "coldstart", "s3.first_result_s", "baseline_python.wall_s", "s",
        "bare `python -c pass` start, same run", "<= {targets_s.s3:g}"),
    Row("Time to first result, gs:// bucket (emulator)", "coldstart", "gs.first_result_s", "baseline_python.wall_s",
        "s", "bare `python -c pass` start, same run", "<= {targets_s.gs:g}"),
    Row("Worker idle RSS after its first job (file://, demo-model job)", "coldstart", "file.idle_rss_mb", "baseline_python.rss_mb",
        "MB", "bare interpreter, same run", "<= {target_idle_rss_mb}"),
    Row("Worker idle RSS after its first job, s3:// bucket (botocore loaded)", "coldstart", "s3.idle_rss_mb",
        "file.idle_rss_mb", "MB", "file:// bucket, same run", "<= {target_idle_rss_mb}"),
    Row("Worker idle RSS after its first job, gs:// bucket (google-cloud-storage loaded)", "coldstart",
        "gs.idle_rss_mb", "file.idle_rss_mb", "MB", "file:// bucket, same run", "<= {target_idle_rss_mb}"),
    Row("Worker idle anonymous memory after its first job (file://; the rest of RSS is shared library pages, "
        "{file.idle_file_mb:g} MB)", "coldstart", "file.idle_anon_mb", "file.idle_rss_mb", "MB", "its RSS, same run"),
    Row("Worker idle anonymous memory after its first job, s3:// bucket", "coldstart", "s3.idle_anon_mb",
        "file.idle_anon_mb", "MB", "file:// bucket, same run"),
    Row("S3 download throughput, {size_mb} MB object", "storage", "storage_download_mb_s", "plain_http_get_mb_s",
        "MB/s", "plain HTTP GET of the same object"),
    Row("S3 download memory growth, {size_mb} MB object", "storage", "rss_growth_download_mb", "size_mb", "MB",
        "object size (streaming keeps growth far below it)", "< {rss_limit_mb}"),
    Row("Redis commands per zip child ({large.images}-image zip)", "fanin", "large.redis_commands_per_child",
        "small.redis_commands_per_child", "commands", "{small.images}-image zip, same run (equal = nothing polls)"),
    Row("Zip parent done after its last child ({large.images}-image zip)", "fanin",
        "large.parent_done_after_last_child_s", None, "s", "", "<= 1"),
    Row("Metrics scrape with {plus_job_hashes.keys} keys", "exporter", "plus_job_hashes.median_ms",
        "small_keyspace.median_ms", "ms", "{small_keyspace.keys} keys, same run"),
    # --- Redis per job (one worker, AOF everysec) and the capacity it implies
    Row("Redis commands sent per segmentation job (not counting those inside Lua)", "redis_capacity",
        "segmentation.commands_per_job", "noop.commands_per_job", "commands", "null consumer, same run"),
    Row("Redis commands per null job, incl. those inside Lua", "redis_capacity", "noop.commands_total_per_job", None,
        "commands"),
    Row("Redis command time per null job, submitted one by one while the worker runs (INFO commandstats usec)",
        "redis_capacity", "noop.redis_usec_per_job", None, "µs", "", "<= {targets.noop_redis_usec_per_job}"),
    Row("Redis main-thread CPU per null job, submitted one by one (INFO cpu: the commands plus reading, "
        "parsing, replies and AOF writes)", "redis_capacity", "noop.redis_cpu_usec_per_job", "noop.redis_usec_per_job",
        "µs CPU", "command time alone (commandstats), same run", "<= {targets.noop_redis_usec_per_job}"),
    Row("Redis main-thread CPU per null job, {noop_backlog.jobs:,} queued at once (INFO cpu)", "redis_capacity",
        "noop_backlog.redis_cpu_usec_per_job", "noop.redis_cpu_usec_per_job", "µs CPU",
        "submitted one by one, same run", "<= {targets.noop_redis_usec_per_job}"),
    Row("Redis main-thread CPU per segmentation job vs null job (INFO cpu)", "redis_capacity",
        "segmentation.redis_cpu_usec_per_job", "noop.redis_cpu_usec_per_job", "µs CPU", "null consumer, same run",
        "<= {targets.segmentation_vs_noop:g}x baseline"),
    Row("Redis command time per null job, {noop_backlog.jobs:,} queued at once (batches form)", "redis_capacity",
        "noop_backlog.redis_usec_per_job", "noop.redis_usec_per_job", "µs", "submitted one by one, same run",
        "<= {targets.noop_redis_usec_per_job}"),
    Row("Redis command time per segmentation job vs null job", "redis_capacity", "segmentation.redis_usec_per_job",
        "noop.redis_usec_per_job", "µs", "null consumer, same run", "<= {targets.segmentation_vs_noop:g}x baseline"),
    Row("Redis command time per segmentation job vs null jobs paced like it ({noop_paced.sleep_seconds:g} s each)",
        "redis_capacity", "segmentation.redis_usec_per_job", "noop_paced.redis_usec_per_job", "µs",
        "null consumer sleeping each job the segmentation's mean wall time, same run"),
    Row("Redis commands per segmentation job vs null job, incl. those inside Lua", "redis_capacity",
        "segmentation.commands_total_per_job", "noop.commands_total_per_job", "commands", "null consumer, same run"),
    Row("Segmentation jobs/s one Redis primary carries (model: commands x overhead + command time)",
        "redis_capacity", "segmentation.jobs_per_second_per_redis", None, "jobs/s"),
    Row("Demo throughput (`redis-consumer demo`, {images} image jobs)", "demo", "images_per_second", None, "images/s"),
    # --- robustness
    Row("Fuzz: producer-written jobs tried", "fuzz", "cases", None, "jobs"),
    Row("Fuzz: distinct failures (all inputs, then known classes excluded)", "fuzz", "distinct_failures", None,
        "failures"),
    Row("Chaos: jobs through disruptions", "chaos", "jobs", None, "jobs"),
    Row("Chaos: lost jobs", "chaos", "lost", None, "jobs", "", "0"),
    Row("Chaos: stuck jobs", "chaos", "stuck", None, "jobs", "", "0"),
    Row("Chaos: duplicate results", "chaos", "duplicate_results", None, "jobs", "", "0"),
    Row("Chaos: re-executions (at-least-once)", "chaos", "duplicates_executed", None, "executions", "", "allowed"),
    Row("Chaos: max recovery time (HEARTBEAT_TTL 3 s in the soak)", "chaos", "max_recovery_seconds", None, "s"),
]
