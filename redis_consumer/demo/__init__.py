"""`redis-consumer demo`: the whole pipeline on embedded defaults, in one command.

`images` makes synthetic nuclei, `services` starts (and always stops) a private Redis, the dev
model server and worker processes, `report` checks the outputs and prints the summary and montage.
"""
