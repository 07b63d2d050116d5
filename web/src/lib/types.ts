export interface AgentSummary {
  id: string;
  slug: string;
  name: string;
  tagline: string;
  description: string;
  category: string;
  tags: string[];
  kind: string;
  pricing_model: "free" | "subscription" | "pay_per_use" | "one_time";
  price_cents: number;
  currency: string;
  icon: string | null;
  featured: boolean;
  deploy_count: number;
  created_at: string;
}

export interface AgentDetail extends AgentSummary {
  model: string;
  rate_limit_per_minute: number;
  config_schema: JsonSchema;
  default_config: Record<string, unknown>;
  example_prompts: string[];
  secret_fields: string[];
}

export interface AgentList {
  data: AgentSummary[];
  total: number;
  limit: number;
  offset: number;
}

export interface Category {
  category: string;
  count: number;
}

export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  pattern?: string;
  format?: string;
  writeOnly?: boolean;
  dependentRequired?: Record<string, string[]>;
  if?: JsonSchema;
  then?: JsonSchema;
  else?: JsonSchema;
  allOf?: JsonSchema[];
  additionalProperties?: boolean | JsonSchema;
}

export interface Deployment {
  id: string;
  agent_id: string;
  agent: { id: string; slug: string; name: string; kind: string; icon: string | null } | null;
  name: string;
  config: Record<string, unknown>;
  secrets: Record<string, string>;
  status: "configuring" | "active" | "paused" | "error";
  status_reason: string | null;
  created_at: string;
  updated_at: string;
  last_active_at: string | null;
}

export interface Message {
  id: string;
  conversation_id: string;
  role: "user" | "assistant";
  content: string;
  status: "queued" | "running" | "completed" | "failed" | "cancelled";
  error: { code: string; message: string } | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
  model: string | null;
  created_at: string;
  completed_at: string | null;
}

export interface Conversation {
  id: string;
  deployment_id: string;
  title: string | null;
  message_count: number;
  last_message_at: string | null;
  created_at: string;
}

export interface Page<T> {
  data: T[];
  has_more: boolean;
  next_cursor: string | null;
}

export type Rating = "like" | "dislike";

export interface Feedback {
  message_id: string;
  rating: Rating | null;
  comment: string | null;
}

export interface ConversationDetail extends Conversation {
  messages: Page<Message>;
  /** Your ratings of the replies in `messages`. */
  feedback: Feedback[];
}

export interface Usage {
  chat: { limit: number; remaining: number; reset_seconds: number };
  in_flight: { limit: number; current: number };
  deployments: { active: number; active_limit: number; total: number; total_limit: number };
  platform_tokens: { used_today: number; budget_per_day: number };
}

export interface ClientConfig {
  supabase_url: string | null;
  supabase_anon_key: string | null;
  dev_sign_in: boolean;
  app_env: string;
}
