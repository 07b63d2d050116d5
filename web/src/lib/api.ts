// The HTTP API: one fetch wrapper that adds the bearer token and turns problem+json answers
// into ApiError with a message a person can read.

export interface FieldError {
  path: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly errors: FieldError[] = [],
    readonly retryAfter: number | null = null,
    readonly requestId: string | null = null,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

type TokenProvider = () => Promise<string | null>;
let tokenProvider: TokenProvider = () => Promise.resolve(null);
let unauthorizedHandler: () => void = () => undefined;

/** The session module tells the API how to get the current access token. */
export function configureAuth(provider: TokenProvider, onUnauthorized: () => void): void {
  tokenProvider = provider;
  unauthorizedHandler = onUnauthorized;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | undefined | null>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  auth?: boolean;
}

export function buildUrl(path: string, query?: RequestOptions["query"]): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

const HUMAN: Record<number, string> = {
  401: "Please sign in again.",
  403: "You are not allowed to do that.",
  404: "Not found.",
  429: "Too many requests. Please wait a moment.",
  500: "Something went wrong on our side. Please try again.",
  503: "The service is busy. Please try again in a moment.",
};

function retryAfterSeconds(response: Response): number | null {
  const value = response.headers.get("Retry-After");
  if (value === null) return null;
  const n = Number(value);
  return Number.isFinite(n) ? Math.max(0, Math.round(n)) : null;
}

export async function problemFrom(response: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await response.json()) as Record<string, unknown>;
  } catch {
    /* not JSON */
  }
  const detail = typeof body.detail === "string" && body.detail ? body.detail : undefined;
  const code = typeof body.code === "string" ? body.code : `http_${response.status}`;
  const errors = Array.isArray(body.errors) ? (body.errors as FieldError[]) : [];
  const message =
    detail ?? HUMAN[response.status] ?? `The request failed (HTTP ${response.status}).`;
  return new ApiError(
    message,
    response.status,
    code,
    errors,
    retryAfterSeconds(response),
    response.headers.get("X-Request-ID"),
  );
}

/** fetch with the token; resolves to the Response when it is 2xx, else throws ApiError. */
export async function request(path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
  if (options.auth !== false) {
    const token = await tokenProvider();
    if (token) headers.Authorization = `Bearer ${token}`;
  }
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response: Response;
  try {
    response = await fetch(buildUrl(path, options.query), {
      method: options.method ?? (body === undefined ? "GET" : "POST"),
      headers,
      body,
      signal: options.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(
      "Could not reach the server. Check your connection and try again.",
      0,
      "network_error",
    );
  }
  if (!response.ok) {
    const problem = await problemFrom(response);
    if (response.status === 401 && options.auth !== false) unauthorizedHandler();
    throw problem;
  }
  return response;
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await request(path, options);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  return "Something went wrong. Please try again.";
}
