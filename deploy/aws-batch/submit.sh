#!/bin/sh
# Plan once (anywhere that sees the file and can reach S3), then one array job of N workers and a
# finish job that AWS Batch starts only when every child of the array succeeded.
#   deploy/aws-batch/submit.sh /media/master.mov s3://BUCKET/masters/master.mov 4
set -eu
file=$1 target=$2 shards=$3
plan=${PLAN:-s3://${target#s3://}.tally-plan.json}
tally shard plan "$file" "$target" --shards "$shards" --plan "$plan"
aws batch register-job-definition --cli-input-json file://deploy/aws-batch/job-definition.json >/dev/null
array=$(aws batch submit-job --cli-input-json file://deploy/aws-batch/run-array.json \
  --array-properties "size=$shards" --parameters "plan=$plan" --query jobId --output text)
sed "s/ARRAY_JOB_ID/$array/" deploy/aws-batch/finish.json > /tmp/tally-finish.json
aws batch submit-job --cli-input-json file:///tmp/tally-finish.json --parameters "plan=$plan" \
  --query jobId --output text
