#!/bin/sh
# Plan, then an array of N workers and a finish job that runs only if every task succeeded
# (afterok). The file and PLAN must be on a file system every node mounts (or PLAN in S3).
#   deploy/slurm/submit.sh /lustre/master.mov s3://BUCKET/masters/master.mov 4
set -eu
file=$1 target=$2 shards=$3
export PLAN=${PLAN:-$file.tally-plan.json}
tally shard plan "$file" "$target" --shards "$shards" --plan "$PLAN"
array=$(sbatch --parsable --export=ALL --array=0-$((shards - 1)) deploy/slurm/shard-run.sbatch)
sbatch --parsable --export=ALL --dependency=afterok:"$array" --job-name=tally-shard-finish \
  --wrap "tally shard finish '$PLAN'"
