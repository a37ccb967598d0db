#!/usr/bin/env python3
"""Creates the template's data resources through CloudFormation on an emulator (moto_server), then
describes what CloudFormation made, as one JSON object on stdout.

Why only the data resources: moto's CloudFormation creates DynamoDB tables and SQS queues for
real (they then answer the DynamoDB and SQS APIs the adapters call), but it does not run Lambda
custom runtimes, API Gateway v2 integrations, EventBridge targets or Metrics Insights alarms in
any way a test could use. So this script keeps the template's Parameters, Conditions and Mappings
whole, keeps the resources of the types in DATA_TYPES (the table and the queues), and drops the
rest, along with parameters nothing kept refers to. What the tests then exercise (the API over
DynamoDB and SQS) runs on exactly the table and queues CloudFormation created from the template.

Usage: moto_stack.py --endpoint URL --template PATH --prefix PREFIX --stack-name NAME
Prints: {"stack": ..., "status": ..., "resources": {logical: physical}, "table": {...},
         "ttl": {...}, "pitr": ..., "queues": {name: attributes}, "dropped": [logical ids]}
Exits non-zero, with the reason on stderr, when the stack is not CREATE_COMPLETE.
"""

import argparse
import json
import sys
import time

import boto3
import yaml

# Resource types this script creates through the emulator's CloudFormation.
DATA_TYPES = ("AWS::DynamoDB::Table", "AWS::SQS::Queue")
# Longest wait for the stack to settle (moto creates synchronously; this bounds a slow one).
STACK_WAIT_S = 60
POLL_S = 0.2


def refs(node, found):
    """Collects every name a Ref or a ${...} in a Fn::Sub string names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                for part in text.split("${")[1:]:
                    found.add(part.split("}")[0].split(".")[0])
                refs(value, found)
            else:
                refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)
    return found


def data_template(template):
    """The template with only its data resources and what they need."""
    kept = {k: v for k, v in template["Resources"].items() if v["Type"] in DATA_TYPES}
    dropped = sorted(k for k in template["Resources"] if k not in kept)
    names = refs(kept, set())
    params = {k: v for k, v in template.get("Parameters", {}).items() if k in names}
    out = {"AWSTemplateFormatVersion": template["AWSTemplateFormatVersion"], "Resources": kept}
    if params:
        out["Parameters"] = params
    if "Mappings" in template:
        out["Mappings"] = template["Mappings"]
    return out, dropped


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--stack-name", required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()

    with open(args.template) as f:
        template = yaml.safe_load(f)
    body, dropped = data_template(template)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=args.region)
    client = lambda name: session.client(name, endpoint_url=args.endpoint)
    cfn, ddb, sqs = client("cloudformation"), client("dynamodb"), client("sqs")

    params = [{"ParameterKey": "Prefix", "ParameterValue": args.prefix}] if "Prefix" in body.get("Parameters", {}) else []
    cfn.create_stack(StackName=args.stack_name, TemplateBody=json.dumps(body), Parameters=params)
    deadline = time.monotonic() + STACK_WAIT_S
    while True:
        stack = cfn.describe_stacks(StackName=args.stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    if status != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=args.stack_name)["StackEvents"]
        reasons = [f'{e["LogicalResourceId"]}: {e.get("ResourceStatusReason", "")}' for e in events if "FAILED" in e["ResourceStatus"]]
        print(f"stack {args.stack_name} is {status}: {reasons}", file=sys.stderr)
        sys.exit(1)

    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.describe_stack_resources(StackName=args.stack_name)["StackResources"]
    }
    report = {"stack": args.stack_name, "status": status, "resources": resources, "dropped": dropped, "queues": {}}
    for logical, spec in body["Resources"].items():
        physical = resources[logical]
        if spec["Type"] == "AWS::DynamoDB::Table":
            report["table"] = ddb.describe_table(TableName=physical)["Table"]
            report["ttl"] = ddb.describe_time_to_live(TableName=physical)["TimeToLiveDescription"]
            backups = ddb.describe_continuous_backups(TableName=physical)["ContinuousBackupsDescription"]
            report["pitr"] = backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
        else:
            # An SQS queue's physical id is its URL.
            attrs = sqs.get_queue_attributes(QueueUrl=physical, AttributeNames=["All"])["Attributes"]
            report["queues"][physical.rsplit("/", 1)[1]] = attrs
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
