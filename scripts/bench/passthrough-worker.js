// The baseline of scripts/bench-cloudflare.sh: a pass-through worker in the same runtime, with the same origin
// fetch as the sharegate worker (the /t/<token> prefix dropped, the zone-cache options set) but no token check,
// no revocation state and no rewriting. The difference between the two is what sharegate adds per request.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    // Answers the harness's readiness probe itself, as the sharegate worker does (a 200 tells it apart from any other
    // server on the port).
    if (url.pathname === "/_sharegate/status") {
      return new Response("{}", { headers: { "content-type": "application/json" } });
    }
    const path = url.pathname.replace(/^\/t\/[^/]+/, "");
    return fetch(env.SHAREGATE_ORIGIN + path, {
      cf: { cacheEverything: true, cacheTtlByStatus: { "200-299": 86400, "500-599": -1 } },
    });
  },
};
