"""The reference system's deployment sequence, replayed with boto3.

Usage: reference_deploy.py ENDPOINT ZIP

It creates a function, a REST API whose POST / is an AWS (non-proxy)
integration that carries credentials (a role API Gateway assumes) and no
resource-based permission on the function, deploys stage "prod", then POSTs
to the stage. It prints one JSON object: {"status": ..., "body": ...}.
"""

import io
import json
import sys
import time
import urllib.error
import urllib.request

import boto3

ROLE = "arn:aws:iam::000000000000:role/apigateway-lambda-invoke"


def main():
    endpoint, zip_path = sys.argv[1], sys.argv[2]
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="AKIDLOCALCLOUD", aws_secret_access_key="localcloud-secret")
    lam = boto3.client("lambda", **kw)
    apigw = boto3.client("apigateway", **kw)

    with open(zip_path, "rb") as f:
        code = f.read()
    fn = lam.create_function(FunctionName="reference", Runtime="python3.12",
                             Role="arn:aws:iam::000000000000:role/lambda-exec",
                             Handler="app.handler", Code={"ZipFile": code}, Timeout=10)
    lam.get_waiter("function_active_v2").wait(FunctionName="reference",
                                              WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    api = apigw.create_rest_api(name="reference-api")
    api_id = api["id"]
    root = [r for r in apigw.get_resources(restApiId=api_id)["items"] if r["path"] == "/"][0]
    apigw.put_method(restApiId=api_id, resourceId=root["id"], httpMethod="POST",
                     authorizationType="NONE")
    uri = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/%s/invocations"
           % fn["FunctionArn"])
    apigw.put_integration(restApiId=api_id, resourceId=root["id"], httpMethod="POST",
                          type="AWS", integrationHttpMethod="POST", uri=uri, credentials=ROLE)
    apigw.put_method_response(restApiId=api_id, resourceId=root["id"], httpMethod="POST",
                              statusCode="200")
    apigw.put_integration_response(restApiId=api_id, resourceId=root["id"], httpMethod="POST",
                                   statusCode="200", responseTemplates={"application/json": ""})
    apigw.create_deployment(restApiId=api_id, stageName="prod")

    url = "%s/_aws/execute-api/%s/prod/" % (endpoint, api_id)
    req = urllib.request.Request(url, data=json.dumps({"n": 21}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode()
    print(json.dumps({"status": status, "body": body}))


if __name__ == "__main__":
    main()
