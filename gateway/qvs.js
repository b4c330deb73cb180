// The gateway's checks that need a parsed body, run by nginx's own njs module (js_content and
// js_body_filter in nginx.conf.template). Written for njs 0.7 (Debian bookworm's
// libnginx-mod-http-js) and 0.8 (the nginx-unprivileged Alpine image).

// A JSON error as the gateway's other errors are (OpenAI's shape).
function reject(r, message, param) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(400, JSON.stringify({error: {message: message, type: 'invalid_request_error',
                                          param: param || null, code: 400}}) + '\n');
}

// A POST to an allowlisted route: the body must be a JSON object, and fields that make vLLM
// crash (500 with a traceback) instead of answering 400 are refused here. Then on to vLLM.
//   structured_outputs: vLLM 0.19.1 to at least 0.32.0 call .get() on it in a "before"
//   validator (check_structured_outputs_count); a list, string, number or boolean raises
//   AttributeError (vllm-project/vllm PR #44537, open).
// njs parses at most 32 levels deep; deeper bodies are refused too (vLLM's own parser answers
// a non-OpenAI {"detail": ...} for very deep ones).
function forward(r) {
    if (r.method !== 'POST') {
        r.internalRedirect('@vllm_get');
        return;
    }
    var text;
    try {
        text = r.requestText;  // whole in memory: client_body_buffer_size = client_max_body_size
    } catch (e) {
        text = undefined;
    }
    if (text === undefined || text === '') {
        return reject(r, 'the request body is empty: send a JSON object');
    }
    var body;
    try {
        body = JSON.parse(text);
    } catch (e) {
        return reject(r, 'the request body is not valid JSON (' + e.message + '); send a UTF-8 '
                      + 'JSON object nested at most 32 levels deep');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        return reject(r, 'the request body must be a JSON object');
    }
    var so = body.structured_outputs;
    if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so))) {
        return reject(r, '`structured_outputs` must be an object, e.g. {"json": {...}}, '
                      + '{"regex": "..."} or {"choice": [...]}', 'structured_outputs');
    }
    r.internalRedirect('@vllm');
}

// GET /v1/models: each model's "root" is the folder vLLM loads it from; show its id instead.
function models_headers(r) {
    delete r.headersOut['Content-Length'];
}

var models_chunks = [];  // one VM per request: this is the request's own

function models_body(r, data, flags) {  // data: a Buffer (buffer_type=buffer)
    models_chunks.push(data);
    if (!flags.last) {
        return;
    }
    var text = Buffer.concat(models_chunks).toString();
    var out = text;
    try {
        var doc = JSON.parse(text);
        if (doc && Array.isArray(doc.data)) {
            doc.data.forEach(function (m) {
                if (m && typeof m === 'object' && 'root' in m) {
                    m.root = m.id;
                }
            });
            out = JSON.stringify(doc);
        }
    } catch (e) {
        out = text;  // not JSON (an error page): passed on as it is
    }
    r.sendBuffer(out, {last: true});
}

export default {forward, models_headers, models_body};
