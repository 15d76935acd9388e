"""HTTP routes of settlement, feedback and reports, gathered into the one table ``create_app`` adds."""

from aiohttp import web

from perks.settlement import feedback_routes, report_routes, statement_routes

routes = web.RouteTableDef()

for _table in (statement_routes.routes, feedback_routes.routes, report_routes.routes):
    for _route in _table:
        if isinstance(_route, web.RouteDef):
            routes.route(_route.method, _route.path, **_route.kwargs)(_route.handler)
