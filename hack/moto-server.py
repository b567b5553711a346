"""The local stack's AWS API server: moto's server, plus the API Gateway v2 operations the operator calls
that moto 5.2 does not answer (it fails them with HTTP 500), answered from moto's own state as AWS does:

- GetRouteResponses   GET   /v2/apis/{apiId}/routes/{routeId}/routeresponses
- UpdateStage         PATCH /v2/apis/{apiId}/stages/{stageName}

Takes moto_server's arguments (`-H 127.0.0.1 -p PORT`). Run by `hack/stack.sh up` with the stack's venv
python; not part of the product.
"""

import json
from datetime import datetime
from urllib.parse import unquote

from moto.apigatewayv2.responses import ApiGatewayV2Response
from moto.server import main


def get_route_responses(self):
    parts = self.path.split("/")
    api_id, route_id = parts[-4], parts[-2]
    route = self.apigatewayv2_backend.get_route(api_id=api_id, route_id=route_id)
    items = [r.to_json() for r in route.route_responses.values()]
    return 200, {}, json.dumps({"items": items})


# UpdateStage's body fields and the moto Stage attributes they set.
STAGE_FIELDS = {
    "accessLogSettings": "access_log_settings",
    "autoDeploy": "auto_deploy",
    "clientCertificateId": "client_certificate_id",
    "defaultRouteSettings": "default_route_settings",
    "description": "description",
    "routeSettings": "route_settings",
    "stageVariables": "stage_variables",
}


def update_stage(self):
    parts = self.path.split("/")
    api_id, stage_name = parts[-3], unquote(parts[-1])
    stage = self.apigatewayv2_backend.get_stage(api_id, stage_name)
    params = json.loads(self.body or "{}")
    for field, attribute in STAGE_FIELDS.items():
        if field in params:
            setattr(stage, attribute, params[field])
    stage.updated = datetime.now()
    return 200, {}, json.dumps(stage.to_json())


for name, handler in [("get_route_responses", get_route_responses), ("update_stage", update_stage)]:
    if not hasattr(ApiGatewayV2Response, name):
        setattr(ApiGatewayV2Response, name, handler)

if __name__ == "__main__":
    main()
