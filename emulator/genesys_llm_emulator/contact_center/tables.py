"""The contact center's data tables: the company, its agents, customer names, topics and phrase material.

Only data: `calls.py` draws from these tables to build each call.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ids import named_uuid

COMPANY = "Northwind Communications"
DNIS = "tel:+18005550142"
LANGUAGE = "en-US"
IVR_FLOW_NAME = "Main Menu"
PII_KINDS: tuple[str, ...] = ("card", "email", "phone", "ssn")


@dataclass(frozen=True)
class Agent:
    user_id: str
    name: str

    @property
    def first_name(self) -> str:
        return self.name.split()[0]


_AGENT_NAMES = (
    "Maria Lopez",
    "James Carter",
    "Aisha Khan",
    "Tom Becker",
    "Priya Natarajan",
    "Daniel Kim",
    "Sofia Rossi",
    "Marcus Green",
    "Hannah Schultz",
    "Luis Ortega",
    "Grace O'Neill",
    "Ethan Walsh",
)
AGENTS: tuple[Agent, ...] = tuple(Agent(named_uuid(f"agent/{name}"), name) for name in _AGENT_NAMES)
FIRST_NAMES = (
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Elijah",
    "Mia",
    "Lucas",
    "Amelia",
    "Mason",
    "Harper",
    "Logan",
    "Evelyn",
    "Carlos",
    "Fatima",
    "Wei",
    "Dmitri",
    "Keisha",
    "Ravi",
    "Ingrid",
)
LAST_NAMES = (
    "Johnson",
    "Nguyen",
    "Patel",
    "Garcia",
    "Smith",
    "Okafor",
    "Miller",
    "Novak",
    "Davis",
    "Haddad",
    "Brown",
    "Tanaka",
    "Wilson",
    "Moreno",
    "Anderson",
    "Kowalski",
    "Clark",
    "Singh",
    "Lewis",
    "Murphy",
)
AREA_CODES = ("212", "312", "415", "617", "713", "305", "206", "404", "512", "720", "614", "503")
STREETS = ("Maple Avenue", "Linden Street", "Harbor Road", "Cedar Lane", "Elm Court", "Ridge Drive")
MAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")
TEST_CARDS = ("4111111111111111", "4012888888881881", "4242424242424242", "5555555555554444", "5105105105105100")


@dataclass(frozen=True)
class Topic:
    name: str
    queue: str
    openers: tuple[str, ...]  # customer
    exchanges: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (agent variants, customer variants)
    resolutions: tuple[str, ...]  # agent
    reactions: tuple[str, ...]  # customer


TOPICS: tuple[Topic, ...] = (
    Topic(
        "billing_dispute",
        "Billing",
        (
            "Hi, I'm calling because my bill this month is way higher than usual and I don't understand why.",
            "Hello, I was charged twice for the same month and I'd like that fixed.",
            "Yeah hi, there's a charge on my statement I don't recognize, something about premium support.",
        ),
        (
            (
                (
                    "I see the statement here. Which charge are you asking about?",
                    "Let me look at the last two invoices side by side.",
                ),
                (
                    "It's the forty-nine ninety-nine line, I never ordered anything like that.",
                    "The one from the fifteenth, it's the exact same amount as the payment before it.",
                    "Everything after the monthly plan, I only have the basic package.",
                ),
            ),
            (
                (
                    "I can see where that came from. It looks like a one-time add-on was applied to the account.",
                    "You're right, the payment was processed twice on our side.",
                ),
                (
                    "Well I definitely didn't ask for it, so I want it taken off.",
                    "So when do I get my money back?",
                    "That's frustrating, this is the second time this year.",
                ),
            ),
        ),
        (
            "I've reversed the charge, you'll see a credit on your next statement within one to two billing cycles.",
            "I've submitted a refund for the duplicate payment, it usually takes five to seven business days.",
            "I've removed the add-on and applied a courtesy credit for the trouble.",
        ),
        (
            "Okay, thank you, that's what I needed.",
            "Alright, I appreciate you fixing that.",
            "Fine, as long as it doesn't happen again.",
        ),
    ),
    Topic(
        "cancellation",
        "Retention",
        (
            "Hi, I'd like to cancel my service please.",
            "Hello, I'm moving in with family and I need to close my account.",
            "I want to cancel, honestly the price keeps going up and I found a cheaper option.",
        ),
        (
            (
                (
                    "I'm sorry to hear you want to leave. Can I ask what's prompting the cancellation?",
                    "I can help with that. Before I do, may I ask the reason?",
                ),
                (
                    "It's mostly the price, it went up twice this year.",
                    "I just don't use it enough anymore.",
                    "The connection drops every evening and I'm tired of calling about it.",
                ),
            ),
            (
                (
                    "I do have a loyalty offer that would bring your monthly rate down by twenty dollars for a year.",
                    "There's a lower tier plan that might fit better, it's about half the price.",
                ),
                (
                    "Hmm, that's tempting, but I think I still want to cancel.",
                    "Actually, if it's twenty dollars less I'd stay.",
                    "No thanks, I've made up my mind.",
                ),
            ),
        ),
        (
            "Understood. I've scheduled the cancellation for the end of your billing cycle, you'll get a confirmation.",
            "I've applied the loyalty discount instead, it starts on your next bill.",
            "Your account is set to close at the end of the month, and there's no early termination fee.",
        ),
        ("Great, thanks for making it easy.", "Okay, thank you.", "Alright, I appreciate it."),
    ),
    Topic(
        "technical_support",
        "Technical Support",
        (
            "Hi, my internet has been dropping out every few minutes since yesterday.",
            "Hello, my TV box is stuck on a loading screen and won't start.",
            "My Wi-Fi is really slow, like barely loading web pages.",
        ),
        (
            (
                (
                    "Let's figure this out. Are the lights on the front of the router solid or blinking?",
                    "I'm sorry about that. Have you tried restarting the equipment yet?",
                ),
                (
                    "The internet light is blinking orange.",
                    "I unplugged it twice already and it didn't help.",
                    "They all look green to me but it's still not working.",
                ),
            ),
            (
                (
                    "I'm running a line test from here, give me one moment.",
                    "I'm going to send a refresh signal to the device, it'll reboot in about two minutes.",
                ),
                (
                    "Okay, I'll wait.",
                    "It's restarting now, the lights are flashing.",
                    "Alright, it looks like it's coming back.",
                ),
            ),
        ),
        (
            "The line test shows a fault outside the house, so I've booked a technician for tomorrow morning.",
            "The signal looks good now and your speeds are back to normal on my end.",
            "I've updated the firmware on the router, that should stop the dropouts.",
        ),
        (
            "Perfect, it's working again.",
            "Okay, tomorrow morning works for me.",
            "Thanks, I'll call back if it happens again.",
        ),
    ),
    Topic(
        "address_change",
        "Customer Service",
        (
            "Hi, I'm moving next month and need to update my address.",
            "Hello, I want to transfer my service to my new apartment.",
            "I need to change the billing address on my account.",
        ),
        (
            (
                ("Congratulations on the move. What's the new address?", "Sure thing. Where are you moving to?"),
                (
                    "It's a new place over on {street}, same town.",
                    "We're moving to {street}, the apartment on the second floor.",
                    "The new one is on {street}, just a few blocks away.",
                ),
            ),
            (
                (
                    "And when would you like service to start at the new address?",
                    "What date do you need the transfer to happen?",
                ),
                (
                    "The first of next month if possible.",
                    "We get the keys on the twelfth.",
                    "As soon as possible, we're already packing.",
                ),
            ),
        ),
        (
            "I've scheduled the transfer and the billing address is updated as of today.",
            "Everything's set, service will move over on that date and you don't need a technician.",
            "I've updated the account, you'll get an e-mail confirming the new address.",
        ),
        ("Great, that was easy.", "Thank you so much.", "Perfect, one less thing to worry about."),
    ),
    Topic(
        "delivery_problem",
        "Logistics",
        (
            "Hi, I was supposed to get a new router delivered yesterday and it never showed up.",
            "Hello, the package you sent me arrived damaged.",
            "My tracking says delivered but there's nothing at my door.",
        ),
        (
            (
                ("I'm sorry about that. Let me check the shipment status.", "Let me pull up the tracking information."),
                (
                    "It said out for delivery all day and then nothing.",
                    "The box was crushed and the power cable is missing.",
                    "I checked with the neighbors too, nobody has it.",
                ),
            ),
            (
                (
                    "It looks like the carrier marked it delivered at four fifteen in the afternoon.",
                    "I can see the carrier had an exception on the route.",
                ),
                (
                    "That's strange, I was home all afternoon.",
                    "So what happens now?",
                    "I really need it this week for work.",
                ),
            ),
        ),
        (
            "I've shipped a replacement with express delivery, it should arrive in two business days.",
            "I've opened a claim with the carrier and sent a new unit at no charge.",
            "I've arranged a pickup for the damaged unit and a replacement is on its way.",
        ),
        (
            "Okay, thank you, I'll keep an eye out for it.",
            "Great, two days is fine.",
            "Alright, I hope this one makes it.",
        ),
    ),
    Topic(
        "password_reset",
        "Technical Support",
        (
            "Hi, I'm locked out of my online account.",
            "Hello, I forgot my password and the reset e-mail never arrives.",
            "I can't log in to the app, it keeps saying invalid credentials.",
        ),
        (
            (
                (
                    "I can help you get back in. When did you last log in successfully?",
                    "No problem. Did you try the forgot password link?",
                ),
                (
                    "Maybe a week ago, it worked fine then.",
                    "Yes, three times, and nothing shows up, not even in spam.",
                    "I think I changed it recently and now I can't remember it.",
                ),
            ),
            (
                (
                    "I see the account was locked after several failed attempts. I'm unlocking it now.",
                    "I'm sending a new reset link, it should arrive within a minute.",
                ),
                ("Okay, I see it now.", "Got it, it's there.", "Alright, let me try."),
            ),
        ),
        (
            "You should be able to log in now, and I'd recommend turning on two-step verification.",
            "The reset worked, your new password is active.",
            "Your account is unlocked and the reset link is valid for the next hour.",
        ),
        ("That worked, I'm in.", "Great, thank you.", "Perfect, thanks for the help."),
    ),
    Topic(
        "plan_upgrade",
        "Sales",
        (
            "Hi, I'd like to upgrade to a faster internet plan.",
            "Hello, I'm working from home now and I think I need more speed.",
            "I saw an ad for the gigabit plan and wanted to ask about it.",
        ),
        (
            (
                (
                    "Happy to help. How many people and devices are using the connection?",
                    "Sure. What do you mostly use the internet for?",
                ),
                (
                    "Four of us, lots of video calls and streaming.",
                    "Mostly work calls and my kids gaming in the evening.",
                    "Just me, but I upload big files for work.",
                ),
            ),
            (
                (
                    "The five hundred megabit plan would fit well, it's fifteen dollars more per month.",
                    "The gigabit plan is on promotion at the moment, first three months at the current price.",
                ),
                (
                    "What's the contract length on that?",
                    "That sounds good, let's do it.",
                    "Is there an installation fee?",
                ),
            ),
        ),
        (
            "I've upgraded the plan, the new speed will be active within the hour, no installation needed.",
            "Done, there's no contract and no installation fee, and the promotion is applied.",
            "The upgrade is scheduled for tonight, you'll just need to restart the router tomorrow morning.",
        ),
        ("Great, thank you.", "Awesome, can't wait.", "Perfect, that's exactly what I wanted."),
    ),
)
TOPIC_NAMES: tuple[str, ...] = tuple(topic.name for topic in TOPICS)

GREETINGS = (
    "Thank you for calling {company}, my name is {agent}. How can I help you today?",
    "Good {part_of_day}, you've reached {company}, this is {agent} speaking. What can I do for you?",
    "Hi, thanks for calling {company}. My name is {agent}, how can I help?",
)
VERIFY_ASKS = (
    "I can definitely help with that. Can I get your full name so I can pull up the account?",
    "Sorry to hear that. Let me find your account, what's the name on it?",
    "Happy to look into it. Could you verify the name on the account for me?",
)
VERIFY_ANSWERS = (
    "Sure, it's {customer}.",
    "Yes, {customer}. The account should be under my name.",
    "{customer}. I've been a customer for about {years} years.",
)
VERIFIED = (
    "Thank you, {first}, I have your account here.",
    "Thanks {first}, I've got it pulled up.",
    "Perfect, thank you {first}.",
)
ANYTHING_ELSE = ("Is there anything else I can help you with today?", "Anything else I can do for you?")
NOTHING_ELSE = (
    "No, that's everything. Thanks for your help.",
    "No, that's it. Have a good day.",
    "Nope, that covers it.",
)
CLOSINGS = (
    "Thank you for calling {company}, have a great day.",
    "You're welcome, {first}. Take care and thanks for calling.",
    "Glad I could help. Have a good rest of your day.",
)
PII_ASKS = {
    "email": ("And what's the e-mail address on the account?", "Could you confirm your e-mail address for me?"),
    "phone": (
        "And a good callback number in case we get disconnected?",
        "Can you confirm the phone number on the account?",
    ),
    "ssn": (
        "For this change I need to verify your identity. Can you give me your social security number?",
        "I'll need your social security number to verify the account holder.",
    ),
    "card": ("Which card would you like to use for the payment?", "Can I get the card number you'd like on file?"),
}
PII_ANSWERS = {
    "email": ("Sure, my e-mail is {value}.", "It's {value}, that's where the bills go."),
    "phone": ("The number on the account is {value}.", "You can call me back at {value}."),
    "ssn": ("Okay, my social is {value}.", "It's {value}."),
    "card": ("The card number is {value}, expiry oh eight twenty-seven.", "Sure, it's {value}."),
}
