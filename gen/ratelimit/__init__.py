"""Rate limits for teachers: requests per minute, tokens per minute and calls in flight, paced not bursty."""
from gen.ratelimit.base import Permit, RateLimiter, parse_duration
from gen.ratelimit.local import LocalRateLimiter

__all__ = ["Permit", "RateLimiter", "LocalRateLimiter", "parse_duration"]
